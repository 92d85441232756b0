"""The network of this example, shared by train.py and score.py."""

import torch
from torch import nn

FEATURES, HIDDEN, CLASSES = 16, 64, 3


def make_net() -> nn.Module:
    return nn.Sequential(
        nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES)
    )


__all__ = ["FEATURES", "CLASSES", "make_net", "torch"]
