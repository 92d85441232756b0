"""What can be checked of the images without a Docker engine: the Triton node image's Python is one the
slim scoring runtime runs on, and the image installs only that runtime (never the server side)."""

from __future__ import annotations

import re

from tests.conftest import REPO_ROOT
from turnout import runtime

# NGC's tritonserver images and the Python their stub runs: 24.xx on Ubuntu 22.04, 25.xx on 24.04.
NGC_PYTHON = {"24": "3.10", "25": "3.12"}


def test_the_triton_node_image_runs_a_python_the_runtime_supports() -> None:
    dockerfile = (REPO_ROOT / "docker" / "triton-node" / "Dockerfile").read_text()
    tag = re.search(r"^FROM nvcr\.io/nvidia/tritonserver:(\d+)\.(\d+)-py3", dockerfile, re.MULTILINE)
    assert tag is not None, "the node image builds on NGC's tritonserver"
    assert (tag[1], tag[2]) == ("24", "10"), "24.10 = Triton 2.51, the version the embedded default runs"
    assert NGC_PYTHON[tag[1]] in runtime.PYTHONS


def test_the_triton_node_image_installs_only_the_scoring_runtime() -> None:
    dockerfile = (REPO_ROOT / "docker" / "triton-node" / "Dockerfile").read_text()
    assert "turnout/runtime.py requirements" in dockerfile and "turnout/runtime.py install" in dockerfile
    assert "pip install --no-cache-dir --no-deps -e ." not in dockerfile
    assert not re.search(r"COPY (gateway|packager) ", dockerfile)
