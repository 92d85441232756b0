"""Classifies each PNG of the mini-batch: one row per file (file, class, probability), as Azure's MNIST
batch sample returns it."""

import os
from os.path import basename

import numpy as np
import pandas as pd
from PIL import Image


def init():
    global weights
    # A nearest-centroid classifier: one 8x8 centroid per digit, made by train.py.
    weights = np.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "centroids.npy"))


def run(mini_batch: list[str]) -> pd.DataFrame:
    print(f"Executing run method over batch of {len(mini_batch)} files.")
    results = []
    for image_path in mini_batch:
        pixels = np.asarray(Image.open(image_path).convert("L"), dtype=np.float32) / 255.0
        distances = ((weights - pixels[None]) ** 2).sum(axis=(1, 2))
        scores = np.exp(-distances) / np.exp(-distances).sum()
        results.append({"file": basename(image_path), "class": int(scores.argmax()),
                        "probability": round(float(scores.max()), 4)})
    return pd.DataFrame(results)
