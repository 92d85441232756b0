# A >= 1 MB JSON payload in, a small summary out: what the transport costs, not the model.
import json


def init():
    pass


def run(raw_data):
    data = json.loads(raw_data)["data"]
    return {"rows": len(data), "first": data[0][:3]}
