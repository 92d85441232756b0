"""``packager init``: a working package to start from (a linear model in plain numpy, with hooks)."""

from __future__ import annotations

import json
from pathlib import Path

from packager.spec import check_name
from turnout.errors import Conflict

SCORE_PY = '''\
"""Scoring script for {name}.

Turnout calls init() once per instance, preprocess() for each request, predict() once for a whole
dynamic batch (the arrays preprocess returned, stacked along the first axis), and postprocess() for
each request's slice of the result. Raise turnout.BadInput for a request the model cannot take (HTTP 400).
"""

import json
import os

import numpy as np

from turnout import BadInput

weights = None
bias = 0.0


def init():
    global weights, bias
    # AZUREML_MODEL_DIR holds the model folder under its own name, as on Azure ML.
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "weights.json")) as f:
        params = json.load(f)
    weights = np.asarray(params["weights"], dtype=np.float32)
    bias = float(params["bias"])


def preprocess(payload):
    try:
        rows = np.asarray(payload["data"], dtype=np.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f'expected {{{{"data": [[{len_hint} numbers], ...]}}}}: {{exc}}') from None
    if rows.ndim != 2 or rows.shape[1] != weights.shape[0]:
        raise BadInput(f"expected rows of {{weights.shape[0]}} numbers, got shape {{rows.shape}}")
    return rows


def predict(batch):
    return batch @ weights + bias


def postprocess(output):
    return {{"predictions": output.tolist()}}
'''

MODEL_YAML = """\
# Every key is optional; see the README's "Package format".
name: {name}
description: A linear model scaffolded by `packager init`.
scoring_script: score.py
model_path: model
instance:
  kind: cpu
  count: 1
batching:
  max_batch_size: 64
  max_queue_delay_microseconds: 0
timeout_seconds: 30
"""


def scaffold(directory: Path, name: str | None = None) -> list[Path]:
    name = check_name(name or directory.resolve().name)
    if directory.exists() and any(directory.iterdir()):
        raise Conflict(f"{directory} exists and is not empty")
    (directory / "model").mkdir(parents=True, exist_ok=True)
    files = {
        directory / "score.py": SCORE_PY.format(name=name, len_hint=3),
        directory / "model.yaml": MODEL_YAML.format(name=name),
        directory / "model" / "weights.json": json.dumps({"weights": [0.5, -1.0, 2.0], "bias": 0.25}) + "\n",
        directory / "sample-request.json": json.dumps({"data": [[1.0, 2.0, 3.0]]}) + "\n",
    }
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    return list(files)
