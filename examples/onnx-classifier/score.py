"""ONNX Runtime classifier with hooks; predict() gets one stacked float32 array per dynamic batch."""

import os

import numpy as np
import onnxruntime as ort

from turnout import BadInput

LABELS = ["setosa", "versicolor", "virginica"]
session = None


def init():
    global session
    path = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "classifier.onnx")
    # Turnout gives sessions created without options one thread per instance.
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def preprocess(payload):
    rows = np.asarray(payload.get("data") if isinstance(payload, dict) else None, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != 4:
        raise BadInput(f'expected {{"data": [[4 numbers], ...]}}, got shape {rows.shape}')
    return rows


def predict(batch):
    return session.run(["probabilities"], {"input": batch})[0]


def postprocess(probabilities):
    return [{"label": LABELS[int(p.argmax())], "probabilities": p.astype(float).round(4).tolist()} for p in probabilities]
