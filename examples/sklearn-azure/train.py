"""Train the tiny ridge regression this example serves (Azure's sklearn sample, made locally)."""

from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import Ridge


def main() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 10))
    target = features @ np.arange(1, 11) + rng.normal(scale=0.1, size=200)
    model = Ridge(alpha=1.0).fit(features, target)
    out = Path(__file__).parent / "model"
    out.mkdir(exist_ok=True)
    joblib.dump(model, out / "sklearn_regression_model.pkl")
    print(f"wrote {out / 'sklearn_regression_model.pkl'}")


if __name__ == "__main__":
    main()
