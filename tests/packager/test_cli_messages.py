"""What the CLIs say when a user coming from Azure ML gets something slightly wrong: each message names
the file, the key or the rule, and there is never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES

BIN = Path(sys.executable).parent


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def test_an_unfilled_template_says_what_yaml_found(tmp_path: Path) -> None:
    template = tmp_path / "deployment.yml"
    template.write_text("name: {{deployment_name}}\nendpoint_name: {{endpoint}}\ncode_configuration:\n  code: .\n")
    result = run("packager", "validate", str(template))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot be read as YAML" in result.stderr and "line 1" in result.stderr


def test_a_folder_of_azure_deployment_files_names_them(examples_ready: Path) -> None:
    result = run("packager", "validate", str(examples_ready / "sklearn-azure"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "holds Azure deployment YAML files (blue-deployment.yml, green-deployment.yml)" in result.stderr


def test_packager_test_finds_the_sample_request_beside_a_deployment_yaml(examples_ready: Path) -> None:
    from packager.sources import resolve_source
    from packager.testing import request_body_for

    with resolve_source(str(examples_ready / "sklearn-azure" / "blue-deployment.yml")) as package:
        assert request_body_for(package, None) == (EXAMPLES / "sklearn-azure" / "sample-request.json").read_bytes()


def test_invoke_with_a_missing_request_file_says_so(tmp_path: Path) -> None:
    result = run("gateway", "endpoint", "invoke", "-n", "shop", "--request-file", str(tmp_path / "missing.json"),
                 "--admin-key", "k", "--gateway-url", "http://127.0.0.1:9")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "missing.json: No such file or directory" in result.stderr


def test_a_typo_in_an_endpoint_file_names_the_key(tmp_path: Path) -> None:
    endpoint = tmp_path / "endpoint.yml"
    endpoint.write_text("name: shop\nauth_mod: key\n")
    result = run("gateway", "endpoint", "create", "-f", str(endpoint), "--admin-key", "k",
                 "--gateway-url", "http://127.0.0.1:9")
    assert result.returncode == 2 and "unknown key 'auth_mod'" in result.stderr and "pydantic" not in result.stderr


@pytest.mark.parametrize(("cli", "command", "shown"), [
    ("gateway", ["endpoint", "list"], "Admin credential (default: read from the state folder)"),
    ("packager", ["register"], "Version to create (default: next)"),
])
def test_help_keeps_its_defaults(cli: str, command: list[str], shown: str) -> None:
    text = " ".join(run(cli, *command, "--help").stdout.split())  # rich wraps lines
    assert shown in text and "``" not in run(cli, "--help").stdout


def test_every_command_says_what_it_does() -> None:
    for group in ("endpoint", "deployment", "model"):
        listing = run("gateway", group, "--help").stdout
        commands = [line for line in listing.splitlines() if line.startswith("│ ") and "Show this message" not in line]
        assert commands and all(len(line.split()) > 3 for line in commands), listing
