"""Build a staged package into a Triton model-repository entry:

    <repository>/<entry>/config.pbtxt          backend "python_scoring", from Triton's protobuf types
    <repository>/<entry>/1/manifest.json       what the backend needs to know
    <repository>/<entry>/1/code/...            the code folder
    <repository>/<entry>/1/azureml-models/...  AZUREML_MODEL_DIR
    <repository>/<entry>/1/environment/...     its declared environment, lock and build log
    <repository>/<entry>/python-env            a relative link to its built environment (EXECUTION_ENV_PATH)

The entry is staged next to the repository's entries (same filesystem) and renamed into place, so Triton
or a watcher never sees a half-written entry.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from packager import scratch
from packager.environments import BUILD_LOG, Built
from packager.naming import model_entry
from packager.package import PACKAGE_FILE, StagedPackage
from packager.spec import check_name
from turnout.errors import PackageError
from turnout.manifest import CODE_DIR, ENTRY_ENVIRONMENT, ENVIRONMENT_DIR, Manifest
from turnout.triton.config import EntryConfig, build_model_config, render

TRITON_VERSION = "1"  # each Turnout model version is its own entry; Triton's version folder is always 1
STAGING_PREFIX = ".staging-"


@dataclass(frozen=True)
class BuiltEntry:
    name: str
    path: Path
    manifest: Manifest
    changed: bool  # False: an identical entry was already there


def build_entry(
    package: StagedPackage,
    repository: Path,
    *,
    entry: str | None = None,
    version: int | None = None,
    content_hash: str | None = None,
    environment: Built | None = None,
) -> BuiltEntry:
    version = version or package.spec.version or 1
    entry = check_name(entry or model_entry(package.name, version), "entry name")
    manifest = package.manifest(version, content_hash, environment.key if environment else None)
    final = repository / entry
    if (final / TRITON_VERSION).is_dir() and (environment is None or (final / ENTRY_ENVIRONMENT).exists()):
        try:
            current = Manifest.read(final / TRITON_VERSION)
            if current == manifest.replace(source=current.source):
                return BuiltEntry(entry, final, current, changed=False)
        except PackageError:
            pass  # not ours or broken: replace it
    repository.mkdir(parents=True, exist_ok=True)
    scratch.sweep(repository)  # a killed build's staged entry
    staging = scratch.staging(repository)
    try:
        staged = staging / entry
        version_dir = staged / TRITON_VERSION
        shutil.copytree(package.root, version_dir, ignore=shutil.ignore_patterns(PACKAGE_FILE))
        if not (version_dir / CODE_DIR / manifest.scoring_script).is_file():
            raise PackageError(f"{entry}: scoring script {manifest.scoring_script!r} missing from the package")
        manifest.write(version_dir)
        if environment is not None:
            (version_dir / ENVIRONMENT_DIR).mkdir(exist_ok=True)
            shutil.copy2(environment.log, version_dir / ENVIRONMENT_DIR / BUILD_LOG)
            # Relative: a shared volume holding repositories and environments may be mounted anywhere.
            os.symlink(os.path.relpath(environment.path.resolve(), repository.resolve() / entry), staged / ENTRY_ENVIRONMENT)
        config = build_model_config(EntryConfig.from_manifest(manifest, entry))
        (staged / "config.pbtxt").write_text(render(config), encoding="utf-8")
        _swap_into_place(staged, final, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BuiltEntry(entry, final, manifest, changed=True)


def _swap_into_place(staged: Path, final: Path, staging: Path) -> None:
    if final.exists():
        # Two renames: the old entry leaves, the new one arrives; each is atomic.
        os.rename(final, staging / "previous")
    os.rename(staged, final)
