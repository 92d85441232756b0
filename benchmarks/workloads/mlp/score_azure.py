# The same MLP as an Azure init()/run() script: one forward pass per request.
import json

import numpy as np
import torch
from net import make_net

net = None


def init():
    global net
    net = make_net()


def run(raw_data):
    batch = np.asarray(json.loads(raw_data)["data"], dtype=np.float32)
    with torch.inference_mode():
        return {"labels": net(torch.from_numpy(batch)).argmax(dim=1).tolist()}
