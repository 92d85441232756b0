"""Turnout's scoring script for an MLflow model deployed without one (Azure's "no-code" deployments).

Copied into the package's ``code/`` as ``score.py``; it runs in the model's own environment (its
``requirements.txt`` / ``conda.yaml``), loads the model with ``mlflow.pyfunc`` and takes Azure's MLflow input
formats: ``{"input_data": {"columns", "index", "data"}}`` or ``{"input_data": [[...]]}``, and MLflow's own
``dataframe_split``, ``dataframe_records``, ``instances`` and ``inputs``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from turnout.errors import BadInput

model: Any = None
FORMATS = "input_data (split: columns/index/data, or a list of rows), dataframe_split, dataframe_records, instances or inputs"


def _model_folder() -> Path:
    root = Path(os.environ["AZUREML_MODEL_DIR"])
    found = sorted(p.parent for p in root.rglob("MLmodel"))
    if not found:
        raise RuntimeError(f"no MLmodel file under {root}")
    return found[0]


def init() -> None:
    import mlflow.pyfunc  # the model's own environment has it; reading formats does not need it

    global model
    model = mlflow.pyfunc.load_model(str(_model_folder()))


def _split(data: dict[str, Any]) -> pd.DataFrame:
    if "data" not in data:
        raise BadInput(f"a split frame needs 'data' (and optionally 'columns', 'index'); got {sorted(data)}")
    return pd.DataFrame(data["data"], columns=data.get("columns"), index=data.get("index"))


def frame(payload: Any) -> Any:
    """The model's input from one request body, in any of the formats Azure and MLflow accept."""
    if not isinstance(payload, dict):
        raise BadInput(f"expected a JSON object with one of {FORMATS}")
    if "input_data" in payload:
        data = payload["input_data"]
        if isinstance(data, dict) and "data" in data:
            return _split(data)
        if isinstance(data, dict):  # named tensors
            return {k: np.asarray(v) for k, v in data.items()}
        if isinstance(data, list):
            return pd.DataFrame(data) if data and isinstance(data[0], dict) else pd.DataFrame(data)
        raise BadInput("input_data must be a split frame (columns/index/data), a list of rows or of records")
    if "dataframe_split" in payload:
        return _split(payload["dataframe_split"])
    if "dataframe_records" in payload:
        return pd.DataFrame(payload["dataframe_records"])
    for key in ("instances", "inputs"):
        if key in payload:
            value = payload[key]
            return {k: np.asarray(v) for k, v in value.items()} if isinstance(value, dict) else np.asarray(value)
    raise BadInput(f"expected one of {FORMATS}; got keys {sorted(payload)}")


def jsonable(result: Any) -> Any:
    if isinstance(result, pd.DataFrame):
        return result.to_dict(orient="records")
    if isinstance(result, pd.Series):
        return result.tolist()
    if isinstance(result, np.ndarray):
        return result.tolist()
    if isinstance(result, dict):
        return {k: jsonable(v) for k, v in result.items()}
    return result


def run(raw_data: str) -> Any:
    try:
        payload = json.loads(raw_data)
    except ValueError as exc:
        raise BadInput(f"the request is not valid JSON: {exc}") from None
    return jsonable(model.predict(frame(payload)))
