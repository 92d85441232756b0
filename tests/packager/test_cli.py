"""The packager CLI as a user runs it: real processes, a private registry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES


def packager(*args: str, registry: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TURNOUT_REGISTRY": str(registry)}
    exe = Path(sys.executable).parent / "packager"
    result = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=180)
    if check and result.returncode != 0:
        raise AssertionError(f"packager {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def test_scaffold_validate_register_build(tmp_path: Path) -> None:
    registry, pkg, repo = tmp_path / "reg", tmp_path / "iris", tmp_path / "repo"
    packager("init", str(pkg), registry=registry)
    assert "loads as hooks" in packager("validate", str(pkg), registry=registry).stdout
    out = packager("register", str(pkg), "--tag", "stage=dev", registry=registry).stdout
    assert out.startswith("registered iris:1 sha256:")
    assert "already registered (same content) iris:1" in packager("register", str(pkg), registry=registry).stdout
    assert "iris" in packager("list", registry=registry).stdout
    shown = json.loads(packager("show", "iris:1", registry=registry).stdout)
    assert shown["tags"] == {"stage": "dev"} and shown["version"] == 1
    assert "built" in packager("build", "iris:1", "--repository", str(repo), registry=registry).stdout
    assert (repo / "iris-v1" / "config.pbtxt").exists()


def test_validate_says_when_a_run_script_would_gain_from_hooks(tmp_path: Path, examples_ready: Path) -> None:
    azure = packager("validate", str(examples_ready / "sklearn-azure" / "blue-deployment.yml"), registry=tmp_path)
    assert "loads as azure-online" in azure.stdout
    assert "hint: run() is called once per request" in azure.stderr and "scikit-learn" in azure.stderr
    hooks = packager("validate", str(examples_ready / "torch-mlp"), registry=tmp_path)
    assert "loads as hooks" in hooks.stdout and "hint:" not in hooks.stderr
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "score.py").write_text("def init():\n    pass\n\ndef run(raw_data):\n    return raw_data.upper()\n")
    assert "hint:" not in packager("validate", str(plain), registry=tmp_path).stderr


def test_validate_names_the_broken_file_and_phase(tmp_path: Path) -> None:
    result = packager("validate", str(FIXTURES / "broken" / "init_raises"), registry=tmp_path, check=False)
    assert result.returncode == 2
    assert "score.py: init() failed: RuntimeError: boom in init" in result.stderr
    refused = packager("register", str(FIXTURES / "broken" / "syntax_error"), registry=tmp_path, check=False)
    assert refused.returncode == 2 and "not registered" in refused.stderr
    assert not (tmp_path / "syntax_error").exists()


def test_bad_model_yaml_is_reported_without_a_traceback(tmp_path: Path) -> None:
    pkg = tmp_path / "p"
    shutil.copytree(FIXTURES / "broken" / "bad_input", pkg)
    (pkg / "model.yaml").write_text("nmae: typo\n")
    result = packager("validate", str(pkg), registry=tmp_path, check=False)
    assert result.returncode == 2
    assert "unknown key 'nmae'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.integration
def test_packager_test_serves_on_real_triton(tmp_path: Path) -> None:
    pkg = tmp_path / "lin"
    packager("init", str(pkg), registry=tmp_path)
    ok = packager("test", str(pkg), registry=tmp_path)
    assert "HTTP 200" in ok.stdout and '{"predictions":[4.75]}' in ok.stdout
    assert "loaded score.py as hooks" in ok.stderr
    (tmp_path / "bad.json").write_text('{"data": [[1]]}')
    bad = packager("test", str(pkg), "--request-file", str(tmp_path / "bad.json"), registry=tmp_path, check=False)
    assert bad.returncode == 1 and "HTTP 400" in bad.stdout
    (tmp_path / "nodata.json").write_text('{"rows": [[1, 2, 3]]}')
    nodata = packager("test", str(pkg), "--request-file", str(tmp_path / "nodata.json"), registry=tmp_path, check=False)
    assert "HTTP 400" in nodata.stdout and 'expected {"data": [[3 numbers], ...]}' in nodata.stdout
    broken = packager("test", str(FIXTURES / "broken" / "init_raises"), "--request-file", str(tmp_path / "bad.json"),
                      registry=tmp_path, check=False)
    assert broken.returncode == 1 and "boom in init" in broken.stderr


def test_tags_change_on_an_existing_version_and_content_never_does(tmp_path: Path) -> None:
    registry, pkg = tmp_path / "reg", tmp_path / "iris"
    packager("init", str(pkg), registry=registry)
    packager("register", str(pkg), "--tag", "stage=dev", "--skip-validation", registry=registry)
    again = packager("register", str(pkg), "--tag", "owner=fraud", "--skip-validation", registry=registry).stdout
    assert "already registered (same content) iris:1" in again and "tags added: owner=fraud" in again
    assert json.loads(packager("show", "iris:1", registry=registry).stdout)["tags"] == {"stage": "dev", "owner": "fraud"}
    updated = packager("update", "iris:1", "--tag", "stage=prod", "--remove-tag", "owner", registry=registry).stdout
    assert "iris:1 tags: stage=prod" in updated
    shown = json.loads(packager("show", "iris:1", registry=registry).stdout)
    assert shown["tags"] == {"stage": "prod"} and shown["version"] == 1


def test_a_bare_model_registered_as_azure_does_serves_a_deployment_that_names_it(tmp_path: Path, examples_ready: Path) -> None:
    """Azure's *-with-registered-assets.yml: `az ml model create -f model.yml`, then `model: azureml:NAME:1`."""
    registry, sklearn = tmp_path / "reg", examples_ready / "sklearn-azure"
    (tmp_path / "model.yml").write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/model.schema.json\n"
        f"name: sk-model\nversion: 1\npath: {sklearn / 'model'}\ntype: custom_model\n"
        "description: regression\ntags: {team: fraud}\n")
    created = packager("model", "create", "-f", str(tmp_path / "model.yml"), registry=registry).stdout
    assert "registered model sk-model:1" in created
    assert "sk-model" in packager("model", "list", registry=registry).stdout
    shown = json.loads(packager("model", "show", "sk-model:1", registry=registry).stdout)
    assert (shown["tags"], shown["description"], shown["model_name"]) == ({"team": "fraud"}, "regression", "model")
    (tmp_path / "deployment.yml").write_text(
        "name: blue\nendpoint_name: my-endpoint\nmodel: azureml:sk-model:1\n"
        f"code_configuration:\n  code: {sklearn / 'onlinescoring'}\n  scoring_script: score.py\n")
    assert "loads as azure-online" in packager("validate", str(tmp_path / "deployment.yml"), registry=registry).stdout
    missing = packager("model", "create", "-f", str(tmp_path / "deployment.yml"), registry=registry, check=False)
    assert missing.returncode == 2 and "unknown key" in missing.stderr


def test_a_killed_packager_leaves_no_stage_behind_for_good(tmp_path: Path) -> None:
    """SIGKILL during validate leaves its stage (nothing can clean up after SIGKILL); the next run removes it."""
    import signal
    import time

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    package = tmp_path / "slow"
    package.mkdir()
    (package / "score.py").write_text("import time\n\ndef init():\n    time.sleep(60)\n\ndef run(raw):\n    return raw\n")
    env = {**os.environ, "TMPDIR": str(scratch), "TURNOUT_REGISTRY": str(tmp_path / "registry")}
    killed = subprocess.Popen([str(Path(sys.executable).parent / "packager"), "validate", str(package)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while not any(p.name.startswith("turnout-inspect-") for p in scratch.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    left = sorted(p.name for p in scratch.iterdir())
    assert any(name.startswith("turnout-package-") for name in left), left
    subprocess.run([str(Path(sys.executable).parent / "packager"), "list"], env=env, check=True, capture_output=True)
    assert sorted(p.name for p in scratch.iterdir()) == []
