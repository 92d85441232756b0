"""Azure's files as users have them: templated names overridden on the command line (-e, -n, --set, as
az ml does) before anything reads them, Azure's spellings of auth_mode, and Azure keys Turnout does not
use reported as ignored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.cli import _deployment_archive
from gateway.schemas import EndpointSpec
from packager.spec import apply_overrides, load_azure_deployment
from tests.conftest import FIXTURES
from turnout.errors import PackageError

ROLLOUT = FIXTURES / "rollout"


def templated(tmp: Path, **extra: object) -> Path:
    """Azure's docs ship deployment files with placeholders in them."""
    data = yaml.safe_load((ROLLOUT / "blue.yml").read_text())
    data.update(name="<deployment-name>", endpoint_name="<my-endpoint-name>", **extra)
    data["code_configuration"]["code"] = str(ROLLOUT / "code")
    path = tmp / "deployment.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_endpoint_and_name_overrides_apply_before_the_names_are_read(tmp_path: Path) -> None:
    spec, archive = _deployment_archive(templated(tmp_path), "green", "my-shop")
    assert (spec.endpoint_name, spec.name) == ("my-shop", "green") and archive


def test_set_changes_any_key_including_nested_ones(tmp_path: Path) -> None:
    deployment, _ = load_azure_deployment(templated(tmp_path), apply_overrides({}, [
        "endpoint_name=shop", "name=blue", "instance_count=3", "environment_variables.COLOR=red",
        "request_settings.request_timeout_ms=5000"]))
    assert (deployment.endpoint_name, deployment.instance_count) == ("shop", 3)
    assert deployment.environment_variables["COLOR"] == "red"
    assert deployment.request_settings is not None and deployment.request_settings.request_timeout_ms == 5000
    with pytest.raises(PackageError, match="--set 'instance_count': expected KEY=VALUE"):
        apply_overrides({}, ["instance_count"])


def test_packager_validate_takes_set_for_a_templated_file(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "packager"
    result = subprocess.run([str(exe), "validate", str(templated(tmp_path)), "--set", "endpoint_name=shop",
                             "--set", "name=blue"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "loads as azure-online" in result.stdout


@pytest.mark.parametrize(("given", "meant"), [("Key", "key"), ("KEY", "key"), ("AMLToken", "aml_token"),
                                              ("aml_token", "aml_token"), ("AMLTOKEN", "aml_token")])
def test_azures_spellings_of_auth_mode_are_accepted(given: str, meant: str) -> None:
    assert EndpointSpec(name="shop", auth_mode=given).auth_mode == meant


def test_an_auth_mode_turnout_lacks_is_refused_saying_what_it_offers() -> None:
    with pytest.raises(ValueError, match=r"aad_token.*key, aml_token"):
        EndpointSpec(name="shop", auth_mode="aad_token")


def test_azure_keys_turnout_does_not_use_are_reported(tmp_path: Path) -> None:
    path = templated(tmp_path, environment={"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04",
                                            "inference_config": {"liveness_route": {"path": "/", "port": 5001}}},
                     request_settings={"max_queue_wait_ms": 500, "request_timeout_ms": 3000})
    _, ignored = load_azure_deployment(path)
    assert {"environment.inference_config", "request_settings.max_queue_wait_ms"} <= set(ignored)
    # The image is recorded, and said to be unused, with the rest of the environment (packager/sources.py).
    assert "environment.image" not in ignored


def test_a_placeholder_left_in_the_file_asks_for_the_option(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "gateway"
    result = subprocess.run([str(exe), "deployment", "create", "-f", str(templated(tmp_path)), "-n", "blue",
                             "--admin-key", "k", "--gateway-url", "http://127.0.0.1:9"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "endpoint_name is the placeholder '<my-endpoint-name>': give -e NAME" in result.stderr
