"""The benchmark MLP (256-1024-1024-10), with fixed random weights built in init (nothing downloaded)."""

import torch
from torch import nn

torch.set_num_threads(1)  # one thread per process: on 2 cores, pools fight (see README)


def make_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    return net.eval()
