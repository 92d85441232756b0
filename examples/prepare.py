"""Make the examples' model files locally (nothing is downloaded). Skips what already exists."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
STEPS = {
    "sklearn-azure": ("train.py", "model/sklearn_regression_model.pkl"),
    "torch-mlp": ("train.py", "model/mlp.pt"),
    "onnx-classifier": ("build_model.py", "model/classifier.onnx"),
    "keras-regressor": ("train.py", "model/regressor.keras"),
    "batch-tabular": ("train.py", "model/heart_classifier.pkl"),
    "batch-images": ("train.py", "model/centroids.npy"),
}


def main() -> int:
    for example, (script, product) in STEPS.items():
        folder = HERE / example
        if (folder / product).exists():
            print(f"{example}: {product} exists")
            continue
        print(f"{example}: running {script}", flush=True)
        subprocess.run([sys.executable, script], cwd=folder, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
