"""TensorFlow/Keras regressor with hooks: one model call per dynamic batch."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from turnout import BadInput

model = None


def init():
    global model
    model = keras.models.load_model(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "regressor.keras"))


def preprocess(payload):
    rows = np.asarray(payload.get("data") if isinstance(payload, dict) else None, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != 3:
        raise BadInput(f'expected {{"data": [[3 numbers], ...]}}, got shape {rows.shape}')
    return rows


def predict(batch):
    # model(batch) rather than predict(): no per-call tf.data pipeline for small batches
    return np.asarray(model(batch, training=False))


def postprocess(output):
    return {"predictions": output[:, 0].astype(float).round(3).tolist()}
