"""The one ingestion pipeline: stage -> inspect -> register -> build.

``packager register``/``build``, the gateway's drop zone and ``gateway deployment create`` all come through
here, so a package is checked the same way wherever it arrives: its entry points are read, its script is
loaded by the backend's own loader in a child process (mode, hints, inference-schema), it is registered
(same content, same version), and built into a Triton entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packager.build import BuiltEntry, build_entry
from packager.inspection import Inspection, check_entry_points, inspect_package
from packager.package import StagedPackage
from packager.registry import PackageRecord, Registry
from packager.sources import resolve_source
from turnout.errors import PackageError


@dataclass(frozen=True)
class Ingested:
    record: PackageRecord
    created: bool  # False: the same content was registered already, under that version
    built: BuiltEntry
    inspection: Inspection


class InspectionFailed(PackageError):
    """The script did not load in the inspecting child; ``details`` hold the model name and the log tail."""


def stage(source: str, registry: Registry | None = None, overrides: dict[str, Any] | None = None) -> StagedPackage:
    """Stage SOURCE (a folder, archive, Azure YAML or registered name); the caller owns the result."""
    return resolve_source(source, registry, overrides)


def inspect(package: StagedPackage, version: int = 1) -> Inspection:
    """Entry points (read), then the script loaded in a child; a load that fails raises with its log."""
    result = inspect_package(package, version)
    if not result.ok:
        tail = "\n".join(result.log.splitlines()[-40:])
        raise InspectionFailed(result.message, details={"model": package.name, "log_tail": tail})
    return result


def register(package: StagedPackage, registry: Registry, *, validate: bool = True, name: str | None = None,
             version: int | None = None, tags: dict[str, str] | None = None,
             description: str | None = None) -> tuple[PackageRecord, bool, Inspection | None]:
    """Register an inspected package; ``validate=False`` (``--skip-validation``) still reads the entry
    points but does not run the script."""
    inspection = inspect(package) if validate else None
    if not validate:
        check_entry_points(package)
    record, created = registry.register(package, name=name, version=version, tags=tags, description=description)
    return record, created, inspection


def build(package: StagedPackage, repository: Path, *, entry: str | None = None, version: int | None = None,
          content_hash: str | None = None) -> BuiltEntry:
    """Build without registering (``packager build``): the entry points are read first."""
    check_entry_points(package)
    return build_entry(package, repository, entry=entry, version=version, content_hash=content_hash)


def ingest(package: StagedPackage, registry: Registry, repository: Path, entry: Callable[[PackageRecord], str], *,
           name: str | None = None) -> Ingested:
    """Inspect, register and build a staged package; ``entry`` names the built entry from its record."""
    inspection = inspect(package)
    record, created = registry.register(package, name=name)
    built = build_entry(package, repository, entry=entry(record), version=record.version,
                        content_hash=record.content_hash)
    return Ingested(record, created, built, inspection)
