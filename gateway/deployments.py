"""Deployment generations on the fleet: place one (pool, nodes, per-node config), restore them all after a
restart, retire or discard one. Each generation is an entry of its own in ``<state>/deployments``."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass

from gateway.entries import Entries, Entry, EntryState
from gateway.fleet import Fleet
from gateway.placement import choose_nodes, plan, pool_for_instance_type
from gateway.settings import GatewaySettings
from gateway.state import DeploymentRecord, StateStore
from packager.build import TRITON_VERSION
from turnout.errors import TurnoutError
from turnout.manifest import Manifest

log = logging.getLogger("turnout.gateway.deployments")


@dataclass(kw_only=True, eq=False)
class DeploymentEntry(Entry):
    endpoint: str
    deployment: str


class Deployments:
    def __init__(self, entries: Entries, fleet: Fleet, state: StateStore, settings: GatewaySettings) -> None:
        self.entries, self.fleet, self.state, self.settings = entries, fleet, state, settings

    def entry_of(self, record: DeploymentRecord) -> DeploymentEntry | None:
        found = self.entries.get(record.entry)
        return found if isinstance(found, DeploymentEntry) else None

    def _placed(self) -> Counter[str]:
        return Counter(node.name for e in self.entries.of_type(DeploymentEntry) for node in e.nodes)

    async def place(self, record: DeploymentRecord) -> DeploymentEntry:
        """Load the record's entry on nodes of its pool; the entry ends ready, or failed with why."""
        doing = "being created: " if record.state == "creating" else ""
        entry = DeploymentEntry(name=record.entry, endpoint=record.endpoint, deployment=record.name,
                                state=EntryState.loading, reason=f"{doing}loading on its nodes")
        self.entries.put(entry)
        try:
            record.pool = pool_for_instance_type(record.instance_type, self.settings.instance_type_pools,
                                                 self.settings.default_pool)
            nodes = choose_nodes(record.pool, self.fleet.pool(record.pool), self._placed(), record.instance_count,
                                 self.fleet.pools(), record.instance_type)
            manifest = await asyncio.to_thread(Manifest.read, self.settings.deployments_repository / record.entry
                                               / TRITON_VERSION)
            layout = plan(manifest, record.entry, nodes, record.instance_count * record.concurrency)
        except TurnoutError as exc:
            self.entries.set_state(entry, EntryState.failed, exc.message)
        else:
            entry.configs, entry.coalescing = layout.configs, layout.coalescing
            entry.script_timeout, entry.memory_limit = manifest.timeout_seconds, manifest.memory_limit_bytes
            await self.entries.load(entry, layout.nodes)
        if entry.state is EntryState.failed:
            log.error("deployment %s/%s failed: %s", record.endpoint, record.name, entry.reason)
        return entry

    def mark_failed(self, record: DeploymentRecord) -> DeploymentEntry:
        """A generation that never got built (its script failed the inspection): visible, failed, with why."""
        entry = DeploymentEntry(name=record.entry, endpoint=record.endpoint, deployment=record.name,
                                state=EntryState.failed, reason=record.reason)
        self.entries.put(entry)
        return entry

    async def restore(self, keep: Collection[str] = ()) -> None:
        """Place every deployment the state holds (a restart), and remove generations nothing refers to
        (``keep``: entries of this repository that others own, batch deployments')."""
        records = self.state.deployments()
        for record in records:
            if record.state in (EntryState.failed, "creating") and not (
                    self.settings.deployments_repository / record.entry).is_dir():
                if record.state == "creating":  # the gateway stopped while it was being made
                    record.state, record.reason = EntryState.failed.value, (
                        "its creation was interrupted (the gateway stopped); create it again")
                    with self.state.transaction() as db:
                        self.state.put_deployment(db, record)
                self.mark_failed(record)
                continue
            entry = await self.place(record)
            record.nodes = [n.name for n in entry.nodes]
            record.state, record.reason = entry.state.value, entry.reason
            with self.state.transaction() as db:
                self.state.put_deployment(db, record)
        live = {r.entry for r in records} | set(keep)
        # Generations a killed gateway left half-made or half-retired.
        for orphan in self.settings.deployments_repository.iterdir():
            if orphan.is_dir() and orphan.name not in live:
                await asyncio.to_thread(shutil.rmtree, orphan, True)

    async def discard(self, entry: Entry) -> None:
        """A generation that never served: unload what loaded, remove its folder; its state stays visible."""
        planned = [node for node in self.fleet.nodes.values() if node.name in entry.configs]
        await self.entries.unload(entry.name, entry.nodes or planned)
        entry.nodes = ()
        await asyncio.to_thread(shutil.rmtree, self.settings.deployments_repository / entry.name, True)

    async def retire(self, entry: Entry | None) -> None:
        """Drain a generation that no longer takes new requests, then unload and forget it."""
        if entry is None:
            return
        await self.entries.retire(entry, EntryState.unloaded, "no longer served",
                                  remove=[self.settings.deployments_repository / entry.name])
        self.entries.discard(entry.name)
