"""Per-deployment environments on the real Triton: each entry's script runs in its own environment
(EXECUTION_ENV_PATH), side by side with a conflicting one, and on two nodes that reach the shared volume by
different paths."""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from pathlib import Path

import pytest

from packager import pipeline
from packager.sources import resolve_source
from tests.conftest import FIXTURES, Serving
from turnout.errors import BadInput, ScriptLoadError
from turnout.triton.client import TritonClient
from turnout.triton.config import read_config
from turnout.triton.embedded import EmbeddedTriton

pytestmark = pytest.mark.integration

REPORTS = """
import sys
import tabulate

def init():
    pass

def run(raw_data):
    return {"tabulate": tabulate.__version__, "prefix": sys.prefix, "table": tabulate.tabulate([[1, 2]])}
"""


def package(tmp_path: Path, requirements: str | None, *, score: str = REPORTS) -> Path:
    folder = tmp_path / f"pkg-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    (folder / "score.py").write_text(textwrap.dedent(score))
    if requirements is not None:
        (folder / "requirements.txt").write_text(requirements)
    return folder


def deploy(serving: Serving, folder: Path, environments: Path, repository: Path | None = None) -> str:
    entry = f"t{uuid.uuid4().hex[:10]}"
    with resolve_source(str(folder)) as staged:
        pipeline.build(staged, repository or serving.repository, entry=entry,
                       environment=pipeline.EnvironmentOptions(environments))
    return entry


@pytest.fixture(scope="module")
def environments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("environments")


def test_two_versions_of_one_library_serve_side_by_side(serving: Serving, tmp_path: Path, environments: Path) -> None:
    old = deploy(serving, package(tmp_path, "tabulate==0.8.10\n"), environments)
    new = deploy(serving, package(tmp_path, "tabulate==0.9.0\n"), environments)
    answers = {}
    for entry in (old, new):
        config = read_config(serving.repository / entry / "config.pbtxt")
        assert config.parameters["EXECUTION_ENV_PATH"].string_value == "$$TRITON_MODEL_DIRECTORY/python-env"
        serving.client.load(entry)
        answers[entry] = json.loads(serving.client.score(entry, b"{}").body)
    assert answers[old]["tabulate"] == "0.8.10" and answers[new]["tabulate"] == "0.9.0"
    # Each from its own environment in the cache, by the entry's relative link.
    for entry in (old, new):
        link = serving.repository / entry / "python-env"
        assert not os.readlink(link).startswith("/")
        assert Path(answers[entry]["prefix"]).resolve() == link.resolve()
        assert link.resolve().parent == environments.resolve()


def test_a_script_needing_a_package_the_server_lacks_serves_once_its_requirements_name_it(
        serving: Serving, tmp_path: Path, environments: Path) -> None:
    without = deploy(serving, package(tmp_path, None), environments)
    with pytest.raises(ScriptLoadError):
        serving.client.load(without)
    assert "No module named 'tabulate'" in serving.entry_log(without)
    with_it = deploy(serving, package(tmp_path, "tabulate\n"), environments)
    serving.client.load(with_it)
    assert json.loads(serving.client.score(with_it, b"{}").body)["table"].startswith("-")


def test_an_environment_reaches_every_node_through_the_shared_volume(tmp_path: Path, environments: Path) -> None:
    """Two Triton nodes; the second mounts the volume elsewhere (a link to it, as another machine would mount it
    at another path): the entry's relative link finds the environment on both."""
    volume = tmp_path / "volume"
    repository = volume / "deployments"
    repository.mkdir(parents=True)
    elsewhere = tmp_path / "mnt" / "shared"
    elsewhere.parent.mkdir()
    os.symlink(volume, elsewhere)
    folder = package(tmp_path, "tabulate==0.8.10\n")
    entry = f"t{uuid.uuid4().hex[:10]}"
    with resolve_source(str(folder)) as staged:
        pipeline.build(staged, repository, entry=entry,
                       environment=pipeline.EnvironmentOptions(volume / "environments"))
    answers = []
    with EmbeddedTriton(repository=repository, work_dir=tmp_path / "node-a") as node_a, \
            EmbeddedTriton(repository=elsewhere / "deployments", work_dir=tmp_path / "node-b") as node_b:
        for node in (node_a, node_b):
            with TritonClient(node.http_url) as client:
                client.load(entry)
                answers.append(json.loads(client.score(entry, b"{}").body))
    assert [a["tabulate"] for a in answers] == ["0.8.10", "0.8.10"]
    assert all(Path(a["prefix"]).resolve().parent == (volume / "environments").resolve() for a in answers)


def test_an_mlflow_model_without_a_script_serves_in_its_own_environment(serving: Serving, environments: Path) -> None:
    """Azure's no-code deployment: the model's requirements.txt is its environment (mlflow as mlflow-skinny),
    Turnout's script loads it with mlflow.pyfunc and takes Azure's MLflow input format."""
    entry = deploy(serving, FIXTURES / "mlflow_model" / "no-code-deployment.yml", environments)
    serving.client.load(entry)
    body = {"input_data": {"columns": ["a", "b", "c"], "index": [0, 1], "data": [[1, 1, 1], [0, 0, 1]]}}
    assert json.loads(serving.client.score(entry, json.dumps(body).encode()).body) == [6.0, 3.0]
    records = {"dataframe_records": [{"a": 2, "b": 0, "c": 0}]}
    assert json.loads(serving.client.score(entry, json.dumps(records).encode()).body) == [2.0]
    with pytest.raises(BadInput, match="expected one of input_data"):
        serving.client.score(entry, b'{"rows": []}')
