"""Repository models: every entry found in the model repository or built from a drop, by name and version.

Serves the drop zone (its only writer) and the model URLs: load a version, keep the newest
``keep_versions`` ready ones serving and retire older ones, report a drop that failed, forget a removed one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.catalog import EntryInfo
from gateway.entries import Entries, Entry, EntryState
from gateway.fleet import Fleet
from gateway.settings import GatewaySettings

log = logging.getLogger("turnout.gateway.models")


@dataclass(kw_only=True, eq=False)
class ModelEntry(Entry):
    info: EntryInfo
    drop: str | None = None  # the repository item (folder, archive, YAML, entry) this came from
    log_tail: str = ""  # why it failed, from the entry's own log
    mode: str = ""  # how its script was loaded (Azure run(), hooks, batch), when known

    @property
    def probed(self) -> bool:
        return self.info.kind == "python_scoring"  # a plain Triton model has its own tensors

    def as_dict(self) -> dict[str, Any]:
        manifest = self.info.manifest
        return {
            "name": self.info.name, "version": self.info.version, "entry": self.info.entry,
            "kind": self.info.kind, "drop": self.drop, **self.health(),
            **({"mode": self.mode} if self.mode else {}),
            **({"log_tail": self.log_tail} if self.state is EntryState.failed and self.log_tail else {}),
            "description": manifest.description if manifest else "",
            "tags": manifest.tags if manifest else {},
            "environment": manifest.environment if manifest else None,
        }


def failure_key(drop: str) -> str:
    return f"drop:{drop}"


@dataclass
class RepositoryModels:
    entries: Entries
    fleet: Fleet
    settings: GatewaySettings
    removed: dict[str, str] = field(default_factory=dict)  # model name -> why its URL is gone

    def all(self) -> list[ModelEntry]:
        return self.entries.of_type(ModelEntry)

    def get(self, entry: str) -> ModelEntry | None:
        found = self.entries.get(entry)
        return found if isinstance(found, ModelEntry) else None

    def of_drop(self, drop: str) -> list[ModelEntry]:
        return [m for m in self.all() if m.drop == drop]

    async def load(self, info: EntryInfo, drop: str | None, mode: str = "") -> ModelEntry:
        model = ModelEntry(name=info.entry, info=info, drop=drop, coalescing=info.coalescing, mode=mode,
                           script_timeout=info.manifest.timeout_seconds if info.manifest else None,
                           memory_limit=info.manifest.memory_limit_bytes if info.manifest else None)
        previous = self.get(info.entry)
        if previous is not None and previous.ready:
            model.nodes, model.state = previous.nodes, EntryState.ready  # a reload: the old one serves meanwhile
        self.removed.pop(info.name, None)
        self.entries.put(model)
        nodes = self.fleet.pool(self.settings.default_pool)
        if info.problem:
            self.entries.set_state(model, EntryState.failed, info.problem)
        elif not nodes:
            self.entries.set_state(model, EntryState.failed, f"no node in pool {self.settings.default_pool!r}")
        else:
            await self.entries.load(model, nodes)
            if model.state is EntryState.failed:
                model.log_tail = self.fleet.node_log(info.entry, nodes, 20)
                log.error("model %s (entry %s) failed to load: %s", info.name, info.entry, model.reason)
        return model

    async def settle(self, name: str) -> None:
        """Serve the newest ready versions of a model (``keep_versions`` of them); retire older ones."""
        ready = sorted((m for m in self.all() if m.info.name == name and m.ready),
                       key=lambda m: m.info.version, reverse=True)
        for old in ready[self.settings.keep_versions:]:
            built = self.settings.built_repository / old.name
            await self.entries.retire(old, EntryState.unloaded, f"replaced by version {ready[0].info.version}",
                                      remove=[built] if built.is_dir() else [])

    def report_failure(self, drop: str, reason: str, model: str | None, log_tail: str) -> None:
        key = failure_key(drop)
        info = EntryInfo(entry=key, name=model or Path(drop).stem, version=0, kind="package", problem=reason)
        self.entries.put(ModelEntry(name=key, info=info, drop=drop, state=EntryState.failed, reason=reason,
                                    log_tail=log_tail))
        log.warning("drop %s failed: %s", drop, reason)

    def report_building(self, drop: str, model: str, progress: str) -> None:
        """A drop whose environment is being built: listed as building (with its latest step) until it loads."""
        key = failure_key(drop)
        info = EntryInfo(entry=key, name=model, version=0, kind="package")
        self.entries.put(ModelEntry(name=key, info=info, drop=drop, state=EntryState.building,
                                    reason=f"building its environment: {progress}"))

    def clear_failure(self, drop: str) -> None:
        self.entries.discard(failure_key(drop))

    async def remove_drop(self, drop: str) -> set[str]:
        """Unload everything a deleted drop served; its model URLs answer 404 with the reason."""
        models = self.of_drop(drop)
        names = {m.info.name for m in models}
        for model in models:
            built = self.settings.built_repository / model.name
            if model.nodes:
                await self.entries.retire(model, EntryState.removed, f"its package {drop!r} left the repository",
                                          remove=[built] if built.is_dir() else [])
            self.entries.discard(model.name)
        for name in names:
            if not any(m.info.name == name for m in self.all()):
                self.removed[name] = f"its package {drop!r} was deleted from the repository"
        self.entries.changed()
        return names
