# The MLP with hooks: preprocess per request, one forward pass per dynamic batch.
import numpy as np
import torch
from net import make_net

net = None


def init():
    global net
    net = make_net()


def preprocess(payload):
    return np.asarray(payload["data"], dtype=np.float32)


def predict(batch):
    with torch.inference_mode():
        return net(torch.from_numpy(batch)).argmax(dim=1).numpy()


def postprocess(labels):
    return {"labels": labels.tolist()}
