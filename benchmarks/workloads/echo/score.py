# Echo: the request's JSON back. An unmodified Azure-style script, served as is by every system.
import json


def init():
    pass


def run(raw_data):
    return json.loads(raw_data)
