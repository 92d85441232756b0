"""A package in Turnout's normalised layout (see packager/sources.py), shared by the sources that stage
it, the inspection that loads it, the registry that keeps it and the builder that turns it into an entry.

    code/                    the code folder, scoring script inside
    azureml-models/<model>   the model folder or file, under its own name (AZUREML_MODEL_DIR's layout)
    environment/             requirements.txt / conda.yaml (+ requirements.lock once built): its own environment
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from packager.spec import PackageSpec
from turnout.manifest import CODE_DIR, Manifest

PACKAGE_FILE = "package.json"
SPEC_FILE = "model.yaml"
SAMPLE_REQUEST = "sample-request.json"
_REGISTERED = re.compile(r"^(?:azureml:)?(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*?)(?::(?P<version>\d+|latest)|@latest)?$")


@dataclass
class StagedPackage:
    """A package in the normalised layout. ``root`` is temporary unless it is a registry folder."""

    root: Path
    name: str
    spec: PackageSpec
    model_name: str | None
    source: str
    warnings: list[str] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    owned: bool = False  # a folder its caller made for it (an upload): writable like a temporary one

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> StagedPackage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    def content_hash(self) -> str:
        """sha256 over every file and the settings that change serving (not name, version, tags)."""
        digest = hashlib.sha256()
        serving = self.spec.model_dump(mode="json", exclude={"name", "version", "description", "tags"})
        digest.update(orjson.dumps(serving, option=orjson.OPT_SORT_KEYS))
        for path in sorted(p for p in self.root.rglob("*") if p.is_file() and p.name != PACKAGE_FILE):
            digest.update(path.relative_to(self.root).as_posix().encode() + b"\0")
            with open(path, "rb") as f:
                digest.update(hashlib.file_digest(f, "sha256").digest())
        return "sha256:" + digest.hexdigest()

    @property
    def temporary(self) -> bool:
        """A staged copy (writable), not a registry folder."""
        return self._tmp is not None or self.owned

    def manifest(self, version: int, content_hash: str | None = None, environment: str | None = None) -> Manifest:
        sample = self.root / CODE_DIR / SAMPLE_REQUEST
        return Manifest(
            name=self.name,
            version=version,
            description=self.spec.description,
            tags=self.spec.tags,
            content_hash=content_hash or self.content_hash(),
            scoring_script=self.spec.scoring_script,
            model_name=self.model_name,
            kind=self.spec.kind,
            timeout_seconds=self.spec.timeout_seconds,
            init_timeout_seconds=self.spec.init_timeout_seconds,
            threads=self.spec.threads,
            environment_variables=self.spec.environment_variables,
            signature=self.spec.signature,
            sample_request=SAMPLE_REQUEST if sample.is_file() else None,
            source=self.source,
            instance_kind=self.spec.instance.kind,
            instance_count=self.spec.instance.count,
            max_batch_size=self.spec.batching.max_batch_size,
            dynamic_batching=self.spec.batching.enabled,
            max_queue_delay_microseconds=self.spec.batching.max_queue_delay_microseconds,
            memory_limit_bytes=int(self.spec.memory_limit) if self.spec.memory_limit is not None else None,
            environment=environment,
        )


def parse_reference(text: str) -> tuple[str, int | None] | None:
    """``name``, ``name:3``, ``name:latest``, ``azureml:name:3``, ``name@latest`` -> (name, version|None)."""
    match = _REGISTERED.match(text)
    if not match:
        return None
    version = match.group("version")
    return match.group("name"), (int(version) if version and version != "latest" else None)
