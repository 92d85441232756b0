"""The local model registry: immutable ``name:version`` packages, each with its content hash.

Layout: ``<root>/<name>/<version>/`` holds the normalised package (see sources.py) and ``package.json``.
A version folder is created by one atomic rename and never written again; registering content that a
version of the same name already holds returns that version instead of making a new one.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from packager import scratch
from packager.package import PACKAGE_FILE, StagedPackage, parse_reference
from packager.spec import PackageSpec, check_name
from turnout.errors import Conflict, NotFound, PackageError

REGISTRY_ENV = "TURNOUT_REGISTRY"


def default_registry_root(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit
    if os.environ.get(REGISTRY_ENV):
        return Path(os.environ[REGISTRY_ENV])
    return Path.home() / ".turnout" / "registry"


class PackageRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str
    version: int
    content_hash: str
    created: datetime
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    source: str = ""
    model_name: str | None = None
    spec: PackageSpec
    asset: str = Field(default="package", description="package (code + model), or model (Azure's bare model)")

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = root

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def path_of(self, record: PackageRecord) -> Path:
        return self.root / record.name / str(record.version)

    def versions(self, name: str) -> list[PackageRecord]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        records = []
        for child in folder.iterdir():
            if child.name.isdigit() and (child / PACKAGE_FILE).is_file():
                records.append(PackageRecord.model_validate_json((child / PACKAGE_FILE).read_text(encoding="utf-8")))
        return sorted(records, key=lambda r: r.version)

    def list(self) -> list[PackageRecord]:
        if not self.root.is_dir():
            return []
        names = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        return [record for name in names for record in self.versions(name)]

    def resolve(self, reference: str) -> PackageRecord:
        parsed = parse_reference(reference)
        if parsed is None:
            raise PackageError(f"{reference!r} is not a model reference (name, name:version or name:latest)")
        name, version = parsed
        records = self.versions(name)
        if not records:
            raise NotFound(f"model {name!r} is not registered in {self.root}")
        if version is None:
            return records[-1]
        for record in records:
            if record.version == version:
                return record
        known = ", ".join(str(r.version) for r in records)
        raise NotFound(f"model {name!r} has no version {version} (registered: {known})")

    def stage(self, reference: str) -> StagedPackage:
        """A registered package as a StagedPackage; its root is the registry folder itself (read only)."""
        record = self.resolve(reference)
        return StagedPackage(
            root=self.path_of(record),
            name=record.name,
            spec=record.spec.model_copy(update={"version": record.version}),
            model_name=record.model_name,
            source=f"registry:{record.ref}",
        )

    def register(
        self,
        package: StagedPackage,
        *,
        name: str | None = None,
        version: int | None = None,
        tags: dict[str, str] | None = None,
        description: str | None = None,
        asset: str = "package",
    ) -> tuple[PackageRecord, bool]:
        """Register a staged package. Returns the record and whether it is new (False: same content
        was already registered under that name, and that version is returned)."""
        name = check_name(name or package.name)
        content_hash = package.content_hash()
        requested = version or package.spec.version
        with self._locked():
            existing = self.versions(name)
            for record in existing:
                if record.content_hash == content_hash and requested in (None, record.version):
                    added = {k: v for k, v in (tags or {}).items() if record.tags.get(k) != v}
                    return (self._retag(record, {**record.tags, **added}) if added else record), False
            if requested is not None and any(r.version == requested for r in existing):
                raise Conflict(
                    f"{name}:{requested} is already registered with other content; versions are never "
                    "overwritten (leave out --version to get the next one)"
                )
            new_version = requested or (existing[-1].version + 1 if existing else 1)
            record = PackageRecord(
                name=name,
                version=new_version,
                content_hash=content_hash,
                created=datetime.now(UTC),
                description=description if description is not None else package.spec.description,
                tags={**package.spec.tags, **(tags or {})},
                source=package.source,
                model_name=package.model_name,
                spec=package.spec.model_copy(update={"name": name, "version": new_version}),
                asset=asset,
            )
            self._write(package, record)
            return record, True

    def update_tags(self, reference: str, set_tags: dict[str, str], remove: Sequence[str]) -> PackageRecord:
        """Tags change on an existing version (as Azure lets them); its content never does."""
        with self._locked():
            record = self.resolve(reference)
            unknown = [k for k in remove if k not in record.tags]
            if unknown:
                raise NotFound(f"{record.ref} has no tag {', '.join(unknown)} (tags: {', '.join(record.tags) or 'none'})")
            tags = {k: v for k, v in record.tags.items() if k not in remove} | set_tags
            return self._retag(record, tags)

    def _retag(self, record: PackageRecord, tags: dict[str, str]) -> PackageRecord:
        """Rewrite only the record's package.json, atomically (the caller holds the lock)."""
        updated = record.model_copy(update={"tags": tags})
        target = self.path_of(record) / PACKAGE_FILE
        staged = target.with_suffix(".tmp")
        staged.write_text(updated.model_dump_json(indent=2) + "\n", encoding="utf-8")
        os.replace(staged, target)
        return updated

    def _write(self, package: StagedPackage, record: PackageRecord) -> None:
        final = self.path_of(record)
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch.sweep(self.root)  # a killed register's half-copied package
        staging = scratch.staging(self.root)
        try:
            shutil.copytree(package.root, staging / "pkg", ignore=shutil.ignore_patterns(PACKAGE_FILE))
            (staging / "pkg" / PACKAGE_FILE).write_text(record.model_dump_json(indent=2) + "\n", encoding="utf-8")
            os.rename(staging / "pkg", final)  # atomic; fails if the version exists
        except OSError as exc:
            raise Conflict(f"{record.ref} could not be written to {final}: {exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
