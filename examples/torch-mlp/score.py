"""PyTorch MLP with hooks: predict() runs once per dynamic batch on one stacked tensor."""

import os

import torch
from net import FEATURES, make_net

from turnout import BadInput

net = None


def init():
    global net
    checkpoint = torch.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "mlp.pt"))
    net = make_net()
    net.load_state_dict(checkpoint["state_dict"])
    net.eval()


def preprocess(payload):
    try:
        rows = torch.as_tensor(payload["data"], dtype=torch.float32)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise BadInput(f'expected {{"data": [[{FEATURES} numbers], ...]}}: {exc}') from None
    if rows.dim() != 2 or rows.shape[1] != FEATURES:
        raise BadInput(f"expected rows of {FEATURES} numbers, got shape {list(rows.shape)}")
    return rows


def predict(batch):
    with torch.inference_mode():
        return torch.softmax(net(batch), dim=1)


def postprocess(probabilities):
    return {
        "labels": probabilities.argmax(dim=1).tolist(),
        "probabilities": probabilities.double().round(decimals=4).tolist(),
    }
