"""Scores each CSV file of the mini-batch row by row: one output row per input row, with its file name
(a DataFrame with a ``file`` column, so a file may give any number of rows)."""

import glob
import os

import joblib
import pandas as pd


def init():
    global model
    # AZUREML_MODEL_DIR is the registered model's folder, as on Azure.
    model = joblib.load(glob.glob(os.path.join(os.environ["AZUREML_MODEL_DIR"], "**", "*.pkl"), recursive=True)[0])


def run(mini_batch: list[str]) -> pd.DataFrame:
    print(f"Executing run method over batch of {len(mini_batch)} files.")
    results = []
    for path in mini_batch:
        data = pd.read_csv(path)
        predictions = model.predict(data)
        frame = data.copy()
        frame["prediction"] = predictions
        frame.insert(0, "file", os.path.basename(path))
        results.append(frame)
    return pd.concat(results)
