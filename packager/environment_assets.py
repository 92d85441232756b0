"""Registered environments, as ``az ml environment create -f env.yml`` makes them: ``NAME:VERSION`` assets that
Azure deployment YAMLs name as ``environment: azureml:NAME:VERSION`` (or ``azureml:NAME@latest``).

An asset is Azure's environment YAML (``name``, ``version``, ``image``, ``conda_file``, ``description``,
``tags``) with its conda file, kept under ``<registry>/.environments/<name>/<version>/``, immutable like a
model version. A deployment that names it gets its files in its package's ``environment/`` folder, so the
environment is built and cached like any other (packager/environments.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from packager import scratch
from packager.environments import IMAGE_FILE
from packager.spec import check_name, format_validation, read_yaml
from turnout.errors import Conflict, NotFound, PackageError

ASSETS_DIR = ".environments"
RECORD_FILE = "environment.json"
# Azure's curated environments (AzureML-sklearn-1.0-ubuntu20.04-py38-cpu, azureml://registries/azureml/...)
# exist only in Azure: a deployment naming one runs in the serving environment, and is told so.
_CURATED = re.compile(r"^(azureml:)?(AzureML-|azureml://registries/azureml/)", re.IGNORECASE)
_REFERENCE = re.compile(r"^(?:azureml:)?(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*?)(?::(?P<version>[A-Za-z0-9_.-]+)|@latest)?$")


class AzureEnvironmentFile(BaseModel):
    """Azure ML's environment YAML (the keys Turnout reads; Docker build contexts are refused)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: str | int | None = None
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    image: str | None = None
    conda_file: str | None = None
    build: dict[str, Any] | None = None
    os_type: str | None = None
    inference_config: dict[str, Any] | None = None


class EnvironmentAsset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    image: str | None = None
    conda_file: str | None = None  # its file name inside the asset folder
    created: datetime
    source: str = ""

    @property
    def ref(self) -> str:
        return f"azureml:{self.name}:{self.version}"


def is_curated(reference: str) -> bool:
    return bool(_CURATED.match(reference))


class EnvironmentAssets:
    def __init__(self, registry_root: Path) -> None:
        self.root = registry_root / ASSETS_DIR

    def create(self, file: Path) -> tuple[EnvironmentAsset, bool]:
        """Register Azure's environment YAML; the same content again returns the version that has it."""
        data = read_yaml(file)
        data.pop("$schema", None)
        try:
            spec = AzureEnvironmentFile.model_validate(data)
        except ValidationError as exc:
            raise PackageError(format_validation(exc, file)) from None
        name = check_name(spec.name, "environment name")
        if spec.build is not None:
            raise PackageError(f"{file}: build (a Docker build context) is not supported: Turnout builds Python "
                               "environments with uv, not images; give conda_file (its pip list and packages)")
        if spec.conda_file is None and spec.image is None:
            raise PackageError(f"{file}: an environment needs conda_file (and optionally image)")
        conda = (file.parent / spec.conda_file).resolve() if spec.conda_file else None
        if conda is not None and not conda.is_file():
            raise PackageError(f"{file}: conda_file {spec.conda_file!r} not found at {conda}")
        content = conda.read_text(encoding="utf-8") if conda else ""
        versions = self.versions(name)
        for asset in versions:
            if asset.image == spec.image and self._conda_text(asset) == content and (
                    spec.version is None or str(spec.version) == asset.version):
                return asset, False
        version = str(spec.version) if spec.version is not None else str(
            max((int(a.version) for a in versions if a.version.isdigit()), default=0) + 1)
        if any(a.version == version for a in versions):
            raise Conflict(f"environment {name}:{version} is already registered with other content; versions are "
                           "never overwritten (leave out version to get the next one)")
        asset = EnvironmentAsset(name=name, version=version, description=spec.description, tags=spec.tags,
                                 image=spec.image, conda_file=conda.name if conda else None,
                                 created=datetime.now(UTC), source=str(file.resolve()))
        self.root.mkdir(parents=True, exist_ok=True)
        staging = scratch.staging(self.root)
        try:
            if conda is not None:
                shutil.copy2(conda, staging / conda.name)
            (staging / RECORD_FILE).write_text(asset.model_dump_json(indent=2) + "\n", encoding="utf-8")
            (self.root / name).mkdir(exist_ok=True)
            os.rename(staging, self.root / name / version)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise Conflict(f"environment {name}:{version} could not be written: {exc}") from exc
        return asset, True

    def _conda_text(self, asset: EnvironmentAsset) -> str:
        if asset.conda_file is None:
            return ""
        return (self.root / asset.name / asset.version / asset.conda_file).read_text(encoding="utf-8")

    def versions(self, name: str) -> list[EnvironmentAsset]:
        folder = self.root / name
        found = [EnvironmentAsset.model_validate_json((p / RECORD_FILE).read_text(encoding="utf-8"))
                 for p in folder.iterdir() if (p / RECORD_FILE).is_file()] if folder.is_dir() else []
        return sorted(found, key=lambda a: (not a.version.isdigit(), int(a.version) if a.version.isdigit() else 0,
                                            a.created))

    def list(self) -> list[EnvironmentAsset]:
        names = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if self.root.is_dir() else []
        return [asset for name in names for asset in self.versions(name)]

    def resolve(self, reference: str) -> EnvironmentAsset:
        match = _REFERENCE.match(reference.strip())
        if match is None:
            raise PackageError(f"{reference!r} is not an environment reference (azureml:NAME:VERSION or "
                               "azureml:NAME@latest)")
        name, version = match.group("name"), match.group("version")
        versions = self.versions(name)
        if not versions:
            raise NotFound(f"environment {reference!r} is not registered here: register it with "
                           "`packager environment create -f env.yml` (Azure's environment YAML), or give the "
                           "deployment's environment inline (conda_file:)")
        if version in (None, "latest"):
            return versions[-1]
        for asset in versions:
            if asset.version == version:
                return asset
        raise NotFound(f"environment {name!r} has no version {version} (registered: "
                       f"{', '.join(a.version for a in versions)})")

    def copy_into(self, asset: EnvironmentAsset, environment_dir: Path) -> None:
        """Put an asset's files into a staged package's ``environment/`` folder."""
        environment_dir.mkdir(parents=True, exist_ok=True)
        if asset.conda_file is not None:
            shutil.copy2(self.root / asset.name / asset.version / asset.conda_file, environment_dir / asset.conda_file)
        if asset.image:
            (environment_dir / IMAGE_FILE).write_text(asset.image + "\n", encoding="utf-8")
        (environment_dir / "asset.json").write_text(json.dumps({"environment": asset.ref}) + "\n", encoding="utf-8")
