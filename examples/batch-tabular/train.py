"""A small heart-disease-like classifier and a folder of unlabeled CSV files to score, made locally."""

from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

COLUMNS = ["age", "sex", "cp", "trestbps", "chol", "thalach", "oldpeak"]
rng = np.random.default_rng(7)
features = pd.DataFrame(rng.normal(size=(400, len(COLUMNS))), columns=COLUMNS).round(3)
target = (features["age"] + features["chol"] - features["thalach"] > 0).astype(int)
Path("model").mkdir(exist_ok=True)
joblib.dump(LogisticRegression().fit(features, target), "model/heart_classifier.pkl")
data = Path("data")
data.mkdir(exist_ok=True)
for i in range(6):
    pd.DataFrame(rng.normal(size=(5, len(COLUMNS))), columns=COLUMNS).round(3).to_csv(
        data / f"heart-unlabeled-{i}.csv", index=False)
print("model/heart_classifier.pkl and data/*.csv written")
