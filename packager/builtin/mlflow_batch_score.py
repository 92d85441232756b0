"""Turnout's batch scoring script for an MLflow model deployed without one (Azure's no-code batch deployments).

Copied into the package's ``code/`` as ``score.py`` when the deployment is a batch one. ``run()`` reads each
file of the mini-batch as Azure does: CSV as a pandas DataFrame (and Parquet, which Azure's no-code route
does not read), images (png, jpg, jpeg, tiff, bmp, gif) as a ``numpy.uint8`` array; calls ``predict`` once
per file; and returns, as Azure's output has them, one row per prediction: the file's name, then the
prediction (or the prediction's columns). Any other file type fails that file, saying which types are read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

model: Any = None
IMAGES = (".png", ".jpg", ".jpeg", ".tiff", ".tif", ".bmp", ".gif")
READ = "csv, parquet, " + ", ".join(e.lstrip(".") for e in IMAGES)


def _model_folder() -> Path:
    root = Path(os.environ["AZUREML_MODEL_DIR"])
    found = sorted(p.parent for p in root.rglob("MLmodel"))
    if not found:
        raise RuntimeError(f"no MLmodel file under {root}")
    return found[0]


def init() -> None:
    import mlflow.pyfunc

    global model
    model = mlflow.pyfunc.load_model(str(_model_folder()))


def read(path: str) -> Any:
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix in IMAGES:
        from PIL import Image

        return np.asarray(Image.open(path), dtype=np.uint8)
    raise ValueError(f"file type {suffix.lstrip('.') or '(none)'!r} is not read by the no-code MLflow batch "
                     f"deployment (it reads {READ}); give the deployment a scoring script for other files")


def predictions(path: str, output: Any) -> pd.DataFrame:
    """One row per prediction, the file's name first."""
    if isinstance(output, pd.DataFrame):
        frame = output.reset_index(drop=True)
    elif isinstance(output, pd.Series):
        frame = pd.DataFrame({"prediction": output.to_numpy()})
    else:
        values = np.asarray(output)
        rows = values.reshape(len(values), -1) if values.ndim > 1 else values.reshape(-1, 1)
        frame = (pd.DataFrame({"prediction": list(rows[:, 0])}) if rows.shape[1] == 1
                 else pd.DataFrame({"prediction": [list(r) for r in rows]}))
    frame.insert(0, "file", os.path.basename(path))
    return frame


def run(mini_batch: list[str]) -> pd.DataFrame:
    return pd.concat([predictions(path, model.predict(read(path))) for path in mini_batch], ignore_index=True)
