"""The ingestion pipeline: entry points are read before anything is built or registered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from packager import pipeline
from packager.inspection import check_entry_points
from packager.registry import Registry
from tests.conftest import PackageFactory
from turnout.errors import PackageError

BIN = Path(sys.executable).parent
NO_ENTRY_POINTS = """
def initialize():
    pass

def score(data):
    return data
"""


def test_build_and_register_refuse_a_script_without_entry_points(make_package: PackageFactory, tmp_path: Path) -> None:
    folder = make_package(NO_ENTRY_POINTS)
    for command in (["build", str(folder), "-r", str(tmp_path / "repo")],
                    ["register", str(folder), "--registry", str(tmp_path / "reg")],
                    ["register", str(folder), "--registry", str(tmp_path / "reg"), "--skip-validation"]):
        result = subprocess.run([str(BIN / "packager"), *command], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result
        assert "defines no entry point: define init() and run(raw_data)" in result.stderr
        assert "preprocess(payload), predict(batch), postprocess(output)" in result.stderr
        assert "it defines initialize, score" in result.stderr
    assert not (tmp_path / "repo").exists() and not (tmp_path / "reg").exists()


@pytest.mark.parametrize("score", [
    "def run(raw):\n    return raw\n",
    "def predict(batch):\n    return batch\n",
    "from helpers import *\n",
    "if True:\n    def init():\n        pass\n    def run(raw):\n        return raw\n",
])
def test_scripts_with_an_entry_point_pass_the_check(make_package: PackageFactory, score: str) -> None:
    with pipeline.stage(str(make_package(score))) as package:
        check_entry_points(package)


def test_a_batch_script_needs_run(make_package: PackageFactory) -> None:
    folder = make_package("def predict(x):\n    return x\n", model_yaml={"kind": "batch"})
    with pipeline.stage(str(folder)) as package, pytest.raises(PackageError, match=r"must define run\(mini_batch\)"):
        pipeline.build(package, folder.parent / "repo")


def test_ingest_inspects_registers_and_builds(make_package: PackageFactory, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    with pipeline.stage(str(make_package("def predict(batch):\n    return batch\n", name="m"))) as package:
        done = pipeline.ingest(package, registry, tmp_path / "repo", lambda record: f"x.{record.name}.{record.version}")
    assert (done.record.ref, done.created, done.built.name) == ("m:1", True, "x.m.1")
    assert done.inspection.mode is not None and done.inspection.mode.startswith("hooks")
    assert (tmp_path / "repo" / "x.m.1" / "1" / "manifest.json").is_file()


CONDA = """
name: model-env
channels: [conda-forge]
dependencies:
  - python=3.8
  - scikit-learn=1.0
  - pip:
    - turnout-missing-dependency==1.2
"""


def test_a_module_the_conda_file_lists_but_the_environment_lacks_is_named(make_package: PackageFactory) -> None:
    folder = make_package("import turnout_missing_dependency\n\ndef run(raw):\n    return raw\n",
                          files={"conda.yaml": CONDA})
    with pipeline.stage(str(folder)) as package, pytest.raises(pipeline.InspectionFailed) as failure:
        pipeline.inspect(package)
    message = failure.value.message
    assert "No module named 'turnout_missing_dependency'" in message
    assert "conda.yaml lists turnout-missing-dependency" in message and "serving environment" in message
