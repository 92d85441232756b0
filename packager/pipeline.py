"""The one ingestion pipeline: stage -> environment -> inspect -> register -> build.

``packager register``/``build``, the gateway's drop zone and ``gateway deployment create`` all come through
here, so a package is checked the same way wherever it arrives: its entry points are read, its script is
loaded by the backend's own loader in a child process (mode, hints, inference-schema), it is registered
(same content, same version), and built into a Triton entry. A package that declares its own Python
environment has it built (or found in the cache) first: the script is inspected in it, and served in it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packager import environments
from packager.build import BuiltEntry, build_entry
from packager.environments import LOCK_FILE, Built, EnvironmentSpec
from packager.inspection import Inspection, check_entry_points, inspect_package
from packager.package import StagedPackage
from packager.registry import PackageRecord, Registry
from packager.sources import resolve_source
from turnout.errors import PackageError
from turnout.manifest import ENVIRONMENT_DIR

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Ingested:
    record: PackageRecord
    created: bool  # False: the same content was registered already, under that version
    built: BuiltEntry
    inspection: Inspection
    environment: Built | None = None


class InspectionFailed(PackageError):
    """The script did not load in the inspecting child; ``details`` hold the model name and the log tail."""


def stage(source: str, registry: Registry | None = None, overrides: dict[str, Any] | None = None) -> StagedPackage:
    """Stage SOURCE (a folder, archive, Azure YAML or registered name); the caller owns the result."""
    return resolve_source(source, registry, overrides)


@dataclass(frozen=True)
class EnvironmentOptions:
    """Where environments are cached, how long a build may take, and who is told how it goes."""

    root: Path | None = None  # None: environments.default_root()
    timeout: float = environments.DEFAULT_TIMEOUT
    progress: Progress = lambda _: None


def prepare_environment(package: StagedPackage, options: EnvironmentOptions | None = None) -> Built | None:
    """The package's own environment, built or found in the cache (None: it runs in the serving one). The
    resolved lock goes into a staged package, so the version registered from it rebuilds identically."""
    spec = EnvironmentSpec.of(package.root / ENVIRONMENT_DIR)
    if spec is None:
        return None
    options = options or EnvironmentOptions()
    built = environments.prepare(spec, options.root or environments.default_root(), progress=options.progress,
                                 timeout=options.timeout)
    lock = package.root / ENVIRONMENT_DIR / LOCK_FILE
    if package.temporary and not lock.is_file() and built.lock.is_file():
        lock.write_bytes(built.lock.read_bytes())
    return built


def inspect(package: StagedPackage, version: int = 1, environment: Built | None = None) -> Inspection:
    """Entry points (read), then the script loaded in a child; a load that fails raises with its log."""
    result = inspect_package(package, version, environment.python if environment else None)
    if not result.ok:
        tail = "\n".join(result.log.splitlines()[-40:])
        raise InspectionFailed(result.message, details={"model": package.name, "log_tail": tail})
    return result


def register(package: StagedPackage, registry: Registry, *, validate: bool = True, name: str | None = None,
             version: int | None = None, tags: dict[str, str] | None = None, description: str | None = None,
             environment: EnvironmentOptions | None = None) -> tuple[PackageRecord, bool, Inspection | None]:
    """Register an inspected package; ``validate=False`` (``--skip-validation``) still reads the entry
    points but neither builds its environment nor runs the script."""
    inspection = inspect(package, environment=prepare_environment(package, environment)) if validate else None
    if not validate:
        check_entry_points(package)
    record, created = registry.register(package, name=name, version=version, tags=tags, description=description)
    return record, created, inspection


def build(package: StagedPackage, repository: Path, *, entry: str | None = None, version: int | None = None,
          content_hash: str | None = None, environment: EnvironmentOptions | None = None) -> BuiltEntry:
    """Build without registering (``packager build``): the entry points are read, its environment built."""
    check_entry_points(package)
    built = prepare_environment(package, environment)
    return build_entry(package, repository, entry=entry, version=version, content_hash=content_hash,
                       environment=built)


def ingest(package: StagedPackage, registry: Registry, repository: Path, entry: Callable[[PackageRecord], str], *,
           name: str | None = None, environment: EnvironmentOptions | None = None) -> Ingested:
    """Build its environment, then inspect, register and build a staged package; ``entry`` names the built
    entry from its record."""
    prepared = prepare_environment(package, environment)
    inspection = inspect(package, environment=prepared)
    record, created = registry.register(package, name=name)
    built = build_entry(package, repository, entry=entry(record), version=record.version,
                        content_hash=record.content_hash, environment=prepared)
    return Ingested(record, created, built, inspection, prepared)
