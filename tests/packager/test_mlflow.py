"""MLflow models without a scoring script (Azure's no-code deployments): how they are staged, and the input
formats Turnout's script for them takes (read in process; serving is tests/backends/test_environments.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from packager.builtin import mlflow_score
from packager.environments import EnvironmentSpec
from packager.sources import resolve_source
from tests.conftest import FIXTURES
from turnout.errors import BadInput, PackageError

MLFLOW = FIXTURES / "mlflow_model"


def test_a_bare_mlflow_model_folder_is_served_by_turnouts_script_in_its_own_environment() -> None:
    with resolve_source(str(MLFLOW / "model")) as package:
        assert (package.root / "code" / "score.py").read_text() == Path(mlflow_score.__file__).read_text()
        assert (package.root / "azureml-models" / "model" / "MLmodel").is_file()
        assert package.warnings == ["an MLflow model with no scoring script: served by Turnout's mlflow.pyfunc script"]
        spec = EnvironmentSpec.of(package.root / "environment")
    assert spec is not None and spec.requirements == ("mlflow-skinny==3.18.0", "pandas")
    assert any("mlflow is installed as mlflow-skinny" in note for note in spec.notes)


def test_azures_no_code_deployment_yaml_is_accepted_as_it_is() -> None:
    with resolve_source(str(MLFLOW / "no-code-deployment.yml")) as package:
        assert package.name == "weighted" and package.model_name == "model"
        assert (package.root / "code" / "score.py").is_file()
        assert (package.root / "environment" / "requirements.txt").is_file()


def test_no_code_configuration_and_no_mlflow_model_says_what_is_missing(tmp_path: Path) -> None:
    shutil.copytree(MLFLOW, tmp_path / "m")
    (tmp_path / "m" / "model" / "MLmodel").unlink()
    with pytest.raises(PackageError, match=r"code_configuration .* is required, unless the model is an MLflow model"):
        resolve_source(str(tmp_path / "m" / "no-code-deployment.yml"))


def test_a_model_without_requirements_still_gets_mlflow(tmp_path: Path) -> None:
    shutil.copytree(MLFLOW / "model", tmp_path / "model")
    (tmp_path / "model" / "requirements.txt").unlink()
    with resolve_source(str(tmp_path / "model")) as package:
        spec = EnvironmentSpec.of(package.root / "environment")
    assert spec is not None and spec.requirements == ("mlflow-skinny",)


SPLIT = {"columns": ["a", "b", "c"], "index": [7, 8], "data": [[1, 1, 1], [0, 0, 1]]}


@pytest.mark.parametrize("payload", [
    {"input_data": SPLIT},
    {"dataframe_split": SPLIT},
    {"dataframe_records": [{"a": 1, "b": 1, "c": 1}, {"a": 0, "b": 0, "c": 1}]},
    {"input_data": [{"a": 1, "b": 1, "c": 1}, {"a": 0, "b": 0, "c": 1}]},
])
def test_azure_and_mlflow_frame_formats_make_the_same_frame(payload: dict[str, object]) -> None:
    frame = mlflow_score.frame(payload)
    assert isinstance(frame, pd.DataFrame)
    assert frame.to_numpy().tolist() == [[1, 1, 1], [0, 0, 1]]
    if "index" in json.dumps(payload):
        assert list(frame.index) == [7, 8] and list(frame.columns) == ["a", "b", "c"]


def test_tensor_formats_and_bad_bodies() -> None:
    assert mlflow_score.frame({"instances": [[1, 2]]}).tolist() == [[1, 2]]
    assert mlflow_score.frame({"inputs": {"x": [1, 2]}})["x"].tolist() == [1, 2]
    with pytest.raises(BadInput, match=r"expected one of input_data .*; got keys \['rows'\]"):
        mlflow_score.frame({"rows": []})
    with pytest.raises(BadInput, match=r"a split frame needs 'data'"):
        mlflow_score.frame({"dataframe_split": {"columns": ["a"]}})
    with pytest.raises(BadInput, match="not valid JSON"):
        mlflow_score.run("{")
