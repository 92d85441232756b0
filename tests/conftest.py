"""Shared fixtures. One real embedded Triton serves the whole session; tests build their own entries
into its repository (each under a unique name) and load them through the repository API."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from packager.build import build_entry
from packager.sources import resolve_source
from turnout.triton.client import TritonClient
from turnout.triton.embedded import EmbeddedTriton

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples"
ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"

PackageFactory = Callable[..., Path]


def pytest_configure(config: pytest.Config) -> None:
    """One environment cache for the whole run, in every process it starts (each spec builds once), and never
    the checkout's .turnout/."""
    if "TURNOUT_ENVIRONMENTS_DIR" not in os.environ:
        os.environ["TURNOUT_ENVIRONMENTS_DIR"] = tempfile.mkdtemp(prefix="turnout-test-environments-")
        config.add_cleanup(lambda: shutil.rmtree(os.environ.pop("TURNOUT_ENVIRONMENTS_DIR"), ignore_errors=True))


@pytest.fixture(scope="session")
def examples_ready() -> Path:
    """The examples' model files, made locally by examples/prepare.py (skips what exists)."""
    subprocess.run([sys.executable, str(EXAMPLES / "prepare.py")], check=True, capture_output=True)
    return EXAMPLES


@pytest.fixture
def make_package(tmp_path: Path) -> PackageFactory:
    """Write a package folder: ``make_package(score="...", model_yaml={...}, files={"model/x": "..."})``."""

    def make(
        score: str,
        *,
        name: str | None = None,
        model_yaml: dict[str, object] | None = None,
        files: dict[str, str | bytes] | None = None,
    ) -> Path:
        folder = tmp_path / (name or f"pkg-{uuid.uuid4().hex[:8]}")
        folder.mkdir(parents=True)
        (folder / "score.py").write_text(textwrap.dedent(score))
        if model_yaml is not None:
            (folder / "model.yaml").write_text(yaml.safe_dump(model_yaml))
        for relative, content in (files or {}).items():
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        return folder

    return make


class Serving:
    """The session's Triton, with helpers to build a package into it and load it."""

    def __init__(self, triton: EmbeddedTriton, client: TritonClient, repository: Path) -> None:
        self.triton = triton
        self.client = client
        self.repository = repository

    def deploy(self, source: str | Path, *, load: bool = True) -> str:
        entry = f"t{uuid.uuid4().hex[:10]}"
        with resolve_source(str(source)) as package:
            build_entry(package, self.repository, entry=entry)
        if load:
            self.client.load(entry)
        return entry

    def entry_log(self, entry: str) -> str:
        path = self.triton.log_dir / f"{entry}.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture(scope="session")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    root = tmp_path_factory.mktemp("triton")
    repository = root / "repository"
    repository.mkdir()
    with EmbeddedTriton(repository=repository, work_dir=root / "work") as triton:
        # Closed before Triton stops: an idle keep-alive connection would block its exit.
        with TritonClient(triton.http_url) as client:
            yield Serving(triton, client, repository)


@pytest.fixture
def anyio_backend() -> str:
    """In-process async tests (``@pytest.mark.anyio``) run on asyncio, as the gateway does."""
    return "asyncio"
