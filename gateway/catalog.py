"""What the model repository holds: one :class:`EntryInfo` per Triton entry, bad ones reported, not fatal."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from gateway.coalesce import Coalescing
from gateway.placement import coalescing_of
from turnout.errors import PackageError
from turnout.manifest import Manifest

log = logging.getLogger("turnout.gateway.catalog")


@dataclass(frozen=True)
class EntryInfo:
    entry: str
    name: str
    version: int
    kind: str  # "python_scoring" (built by the packager) or "triton" (a plain Triton model)
    manifest: Manifest | None = None
    problem: str = ""
    coalescing: Coalescing = Coalescing()


def _latest_version_dir(entry_dir: Path) -> Path | None:
    versions = [p for p in entry_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def read_entry(entry_dir: Path) -> EntryInfo | None:
    """An entry folder as the gateway sees it; None for folders that are not entries at all."""
    if entry_dir.name.startswith(".") or not entry_dir.is_dir() or not (entry_dir / "config.pbtxt").is_file():
        return None
    version_dir = _latest_version_dir(entry_dir)
    if version_dir is None:
        return EntryInfo(entry_dir.name, entry_dir.name, 1, "triton", problem="no version folder")
    if not (version_dir / "manifest.json").exists():
        # A python-backend folder without model.py stays LOADING forever in Triton and blocks later
        # loads: never ask Triton to load one.
        config = (entry_dir / "config.pbtxt").read_text(encoding="utf-8", errors="replace")
        missing = '"python"' in config and not (version_dir / "model.py").is_file()
        problem = f"{version_dir.name}/model.py is missing" if missing else ""
        return EntryInfo(entry_dir.name, entry_dir.name, int(version_dir.name), "triton", problem=problem)
    try:
        manifest = Manifest.read(version_dir)
    except PackageError as exc:
        return EntryInfo(entry_dir.name, entry_dir.name, 1, "python_scoring", problem=exc.message)
    return EntryInfo(entry_dir.name, manifest.name, manifest.version, "python_scoring", manifest,
                     coalescing=coalescing_of(manifest, entry_dir.name))


def scan(repository: Path) -> list[EntryInfo]:
    if not repository.is_dir():
        return []
    entries = []
    for child in sorted(repository.iterdir()):
        try:
            info = read_entry(child)
        except OSError as exc:
            log.warning("skipping %s: %s", child, exc)
            continue
        if info is not None:
            entries.append(info)
    return entries
