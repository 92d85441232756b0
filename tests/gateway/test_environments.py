"""Per-deployment environments through the gateway, as an Azure ML user drives them: a deployment YAML with
an inline conda file or a registered environment, the build shown while it runs and kept afterwards, a build
that fails only its own deployment, and a drop with requirements."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import FIXTURES
from tests.gateway.conftest import BIN, GatewayProcess, endpoint_yaml

pytestmark = pytest.mark.integration

SCORE = """
import tabulate

def init():
    pass

def run(raw_data):
    return {"tabulate": tabulate.__version__}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("environments-gateway")
    (root / "repository").mkdir()
    server = GatewayProcess(root / "repository", root / "state", "--drop-quiet-seconds", "0.2")
    try:
        yield server.start()
    finally:
        server.stop()


def azure_files(folder: Path, name: str, pip: list[str] | None = None, environment: str | None = None) -> Path:
    """Azure's layout: onlinescoring/score.py, environment/conda.yaml, a deployment YAML beside them."""
    (folder / "onlinescoring").mkdir(parents=True, exist_ok=True)
    (folder / "onlinescoring" / "score.py").write_text(textwrap.dedent(SCORE))
    deployment: dict[str, object] = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json",
        "name": name, "endpoint_name": "tables",
        "code_configuration": {"code": "./onlinescoring/", "scoring_script": "score.py"},
        "instance_type": "Standard_DS3_v2", "instance_count": 1,
    }
    if pip is not None:
        (folder / "environment").mkdir(exist_ok=True)
        (folder / "environment" / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": "model-env", "channels": ["conda-forge"],
            "dependencies": ["python=3.11", "numpy<2", "pip", {"pip": [*pip, "azureml-defaults"]}]}))
        deployment["environment"] = {"conda_file": f"./environment/{name}.yaml",
                                     "image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"}
    if environment is not None:
        deployment["environment"] = environment
    path = folder / f"{name}-deployment.yml"
    path.write_text(yaml.safe_dump(deployment, sort_keys=False))
    return path


def score(gateway: GatewayProcess, key: str, deployment: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **({"azureml-model-deployment": deployment} if deployment else {})}
    return httpx.post(f"{gateway.url}/endpoints/tables/score", content=b"{}", headers=headers, timeout=30)


def test_deployments_build_their_environments_and_a_bad_one_fails_alone(
        gateway: GatewayProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNOUT_REGISTRY", str(tmp_path / "registry"))
    gateway.cli("endpoint", "create", "-f", str(endpoint_yaml(tmp_path, "tables")))
    created = gateway.cli("deployment", "create", "-f", str(azure_files(tmp_path, "blue", ["tabulate==0.8.10"])),
                          "--all-traffic")
    # Shown while it builds: each step with its time.
    assert "environment [" in created.stderr and "resolve: 2 requirement(s): numpy<2, tabulate==0.8.10" in created.stderr
    assert "ready: environment" in created.stderr
    assert "environment.image mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest is recorded, not used" \
        in created.stderr
    shown = gateway.cli_json("deployment", "show", "-n", "blue", "-e", "tables")
    assert shown["state"] == "ready" and shown["environment"]
    key, _ = gateway.keys("tables")
    assert score(gateway, key).json() == {"tabulate": "0.8.10"}
    # The build log is kept with the deployment.
    build_log = gateway.cli("deployment", "get-logs", "-n", "blue", "-e", "tables", "--build").stdout
    assert "azureml-defaults (Azure's inference HTTP server) is not installed" in build_log
    assert "install: downloading and installing tabulate==0.8.10" in build_log
    assert f"ready: environment {shown['environment']}" in build_log

    # An update whose environment cannot be built: 424, the reason first; generation 1 keeps its traffic.
    broken = gateway.cli("deployment", "update", "-f", str(azure_files(tmp_path / "v2", "blue", ["tabulate==99.0"])),
                         check=False)
    assert broken.returncode != 0
    assert ("deployment 'blue' failed: its environment could not be built (no matching distribution): Because "
            "there is no version of tabulate==99.0") in broken.stderr
    assert "generation 1 keeps serving" in broken.stderr
    assert score(gateway, key).json() == {"tabulate": "0.8.10"}

    # A registered environment (az ml environment create), named as Azure names it.
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "conda.yaml").write_text("dependencies:\n  - pip:\n    - tabulate==0.9.0\n")
    (tmp_path / "env" / "env.yml").write_text("name: tables-env\nconda_file: conda.yaml\n")
    registered = subprocess_run([str(BIN / "packager"), "environment", "create", "-f", str(tmp_path / "env" / "env.yml")])
    assert "registered environment azureml:tables-env:1" in registered
    gateway.cli("deployment", "create", "-f", str(azure_files(tmp_path / "green", "green",
                                                               environment="azureml:tables-env:1")))
    assert score(gateway, key, "green").json() == {"tabulate": "0.9.0"}
    assert score(gateway, key, "blue").json() == {"tabulate": "0.8.10"}  # side by side, on one Triton


def subprocess_run(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout


def test_a_drop_with_requirements_goes_live_in_its_own_environment(gateway: GatewayProcess, tmp_path: Path) -> None:
    folder = tmp_path / "tables-drop"
    folder.mkdir()
    (folder / "score.py").write_text(textwrap.dedent(SCORE))
    (folder / "requirements.txt").write_text("tabulate==0.8.9\n")
    shutil.copytree(folder, gateway.repository / "tables-drop")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        models = {m["name"]: m for m in httpx.get(f"{gateway.url}/models", headers=gateway.admin).json()}
        if models.get("tables-drop", {}).get("state") == "ready":
            break
        time.sleep(0.2)
    assert models["tables-drop"]["state"] == "ready", models
    assert models["tables-drop"]["environment"]
    answer = httpx.post(f"{gateway.url}/models/tables-drop/score", content=b"{}", headers=gateway.admin)
    assert answer.json() == {"tabulate": "0.8.9"}


def test_azures_no_code_mlflow_deployment_serves(gateway: GatewayProcess, tmp_path: Path) -> None:
    gateway.cli("endpoint", "create", "-f", str(endpoint_yaml(tmp_path, "weights")))
    created = gateway.cli("deployment", "create", "-f", str(FIXTURES / "mlflow_model" / "no-code-deployment.yml"),
                          "--all-traffic")
    assert "served by Turnout's mlflow.pyfunc script" in created.stderr
    key, _ = gateway.keys("weights")
    body = {"input_data": {"columns": ["a", "b", "c"], "index": [0], "data": [[1, 0, 1]]}}
    answer = httpx.post(f"{gateway.url}/endpoints/weights/score", json=body,
                        headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert answer.status_code == 200 and answer.json() == [4.0]
