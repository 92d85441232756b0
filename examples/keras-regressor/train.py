"""Fit a tiny Keras regressor (y = 3a - 2b + c) on synthetic data and save it to model/."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np


def main() -> None:
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(512, 3)).astype("float32")
    target = features @ np.array([3.0, -2.0, 1.0], dtype="float32")
    model = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    model.fit(features, target, epochs=40, batch_size=64, verbose=0)
    out = Path(__file__).parent / "model"
    out.mkdir(exist_ok=True)
    model.save(out / "regressor.keras")
    print(f"wrote {out / 'regressor.keras'} (loss {model.evaluate(features, target, verbose=0):.4f})")


if __name__ == "__main__":
    main()
