"""Digit centroids (8x8) and a folder of noisy digit PNGs to classify, made locally (no download)."""

from pathlib import Path

import numpy as np
from PIL import Image

rng = np.random.default_rng(3)
centroids = np.zeros((10, 8, 8), dtype=np.float32)
for digit in range(10):  # each digit lights a distinct pattern of cells
    cells = rng.choice(64, size=16, replace=False)
    centroids[digit].flat[cells] = 1.0
Path("model").mkdir(exist_ok=True)
np.save("model/centroids.npy", centroids)
data = Path("data")
data.mkdir(exist_ok=True)
for i in range(40):
    digit = i % 10
    noisy = np.clip(centroids[digit] + rng.normal(scale=0.15, size=(8, 8)), 0, 1)
    Image.fromarray((noisy * 255).astype(np.uint8), mode="L").save(data / f"digit-{i:03d}-{digit}.png")
print("model/centroids.npy and data/*.png written")
