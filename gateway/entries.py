"""Loaded entries: the one place that sees every load and unload.

An :class:`Entry` is one Triton entry the gateway serves (a repository model version, a dropped package,
a deployment generation) with its nodes, its lifecycle state and its crash history. :class:`Entries` loads,
unloads, retires (stop routing, drain, unload), heals crashed stubs, counts requests in flight (leases),
and tells its subscribers (the route table, metrics; later batch jobs and eviction) after every change.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from gateway.coalesce import Coalescing
from gateway.metrics import Metrics
from gateway.nodes import TritonNode
from turnout.errors import NotReady, TurnoutError

log = logging.getLogger("turnout.gateway.entries")
CRASH_WINDOW_SECONDS = 300.0
MAX_BACKOFF_SECONDS = 60.0
DRAIN_SECONDS = 30.0


class EntryState(StrEnum):
    building = "building"  # its own Python environment is being built; it loads next
    loading = "loading"
    ready = "ready"
    degraded = "degraded"  # serving from some of its nodes; being loaded again on the others
    restarting = "restarting"  # its process crashed; being loaded again
    failed = "failed"
    unloaded = "unloaded"  # replaced or no longer served; its URL says why
    removed = "removed"  # its package left the repository


GONE = frozenset({EntryState.unloaded, EntryState.removed})
SERVING = frozenset({EntryState.ready, EntryState.degraded})


@dataclass(kw_only=True, eq=False)
class Entry:
    name: str
    nodes: tuple[TritonNode, ...] = ()
    state: EntryState = EntryState.loading
    reason: str = ""
    restarts: int = 0
    last_crash: str = ""
    crash_times: list[float] = field(default_factory=list)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # load-time config per node name
    coalescing: Coalescing = field(default_factory=Coalescing)
    missing: set[str] = field(default_factory=set)  # nodes that lost it (restarted); reloading there
    script_timeout: float | None = None  # its manifest's timeout_seconds: the bound on one call into the script
    memory_limit: int | None = None  # bytes one instance may use (its manifest); past it, it is restarted
    memory: dict[str, list[int]] = field(default_factory=dict)  # node -> bytes per instance, last measured
    heals: int = 0  # restarts completed: a failure seen by a call that started before one is not reported

    @property
    def serving_nodes(self) -> tuple[TritonNode, ...]:
        return tuple(n for n in self.nodes if n.name not in self.missing)

    @property
    def ready(self) -> bool:
        """It answers requests: on all its nodes, or (degraded) on some while the others reload it."""
        return self.state in SERVING and bool(self.serving_nodes)

    @property
    def probed(self) -> bool:
        """The crash probe speaks our backend's tensors: only entries served by it are probed."""
        return True

    def health(self) -> dict[str, Any]:
        measured = [b for per_node in self.memory.values() for b in per_node]
        return {"state": self.state.value, "reason": self.reason, "nodes": [n.name for n in self.nodes],
                "restarts": self.restarts, "last_crash": self.last_crash,
                "memory_bytes": sum(measured) if measured else None,
                **({"memory_limit_bytes": self.memory_limit} if self.memory_limit else {}),
                **({"missing_on": sorted(self.missing)} if self.missing else {})}


E = TypeVar("E", bound=Entry)
Listener = Callable[[], None]


class Entries:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._entries: dict[str, Entry] = {}
        self._listeners: list[Listener] = []
        self._healing: dict[str, asyncio.Task[None]] = {}
        self._reloading: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.inflight: defaultdict[str, int] = defaultdict(int)  # requests in flight per entry (leases)

    # --- the collection and its subscribers ---
    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def changed(self) -> None:
        for listener in self._listeners:
            listener()

    def get(self, name: str) -> Entry | None:
        return self._entries.get(name)

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def of_type(self, kind: type[E]) -> list[E]:
        return [e for e in self._entries.values() if isinstance(e, kind)]

    def put(self, entry: Entry) -> None:
        self._entries[entry.name] = entry
        self.changed()

    def discard(self, name: str) -> None:
        if self._entries.pop(name, None) is not None:
            self.changed()

    def set_state(self, entry: Entry, state: EntryState, reason: str = "") -> None:
        entry.state, entry.reason = state, reason
        self.changed()

    def loaded_names(self) -> set[str]:
        return {e.name for e in self._entries.values() if e.nodes}

    # --- leases: an entry with requests in flight is drained before it is unloaded ---
    def acquire(self, name: str) -> int:
        self.inflight[name] += 1
        return self.inflight[name]

    def release(self, name: str) -> None:
        self.inflight[name] -= 1

    async def drain(self, name: str, timeout: float = DRAIN_SECONDS) -> None:
        """Wait until an entry that takes no new requests has none in flight (bounded)."""
        deadline = time.monotonic() + timeout
        while self.inflight.get(name, 0) > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    # --- loading and unloading ---
    async def load(self, entry: Entry, nodes: Iterable[TritonNode]) -> Entry:
        """Load ``entry`` on ``nodes`` (with its per-node configs); it ends ready, or failed with why."""
        nodes = tuple(nodes)
        try:
            await asyncio.gather(*(node.load(entry.name, entry.configs.get(node.name)) for node in nodes))
        except TurnoutError as exc:
            self.set_state(entry, EntryState.failed, exc.message)
            return entry
        entry.nodes = nodes
        self.set_state(entry, EntryState.ready)
        return entry

    async def unload(self, name: str, nodes: Iterable[TritonNode]) -> None:
        await asyncio.gather(*(node.unload(name) for node in nodes), return_exceptions=True)

    async def retire(self, entry: Entry, state: EntryState, reason: str, remove: Iterable[Path] = ()) -> None:
        """Stop routing to an entry, let its requests finish, unload it, and remove its folders."""
        self.set_state(entry, state, reason)
        await self.drain(entry.name)
        await self.unload(entry.name, entry.nodes)
        entry.nodes = ()
        for folder in remove:
            await asyncio.to_thread(shutil.rmtree, folder, True)
        self.changed()

    # --- nodes that lost entries (a restarted Triton comes back empty) ---
    def reconcile(self, node: TritonNode, loaded: set[str]) -> None:
        """``loaded``: what ``node`` says it has; what it should have and lacks is loaded there again."""
        for entry in self:
            if entry.state in SERVING and entry.name not in loaded and any(n is node for n in entry.nodes):
                self.report_missing(entry.name, node)

    def report_missing(self, name: str, node: TritonNode) -> None:
        """Stop sending ``name`` to ``node`` (it does not have it) and load it there again."""
        entry = self._entries.get(name)
        if entry is None or entry.state not in SERVING or (name, node.name) in self._reloading:
            return
        entry.missing.add(node.name)
        self.set_state(entry, EntryState.degraded, f"not loaded on {', '.join(sorted(entry.missing))} "
                                                   "(the node restarted?); loading it there again")
        self._reloading[(name, node.name)] = asyncio.create_task(self._reload(entry, node),
                                                                 name=f"turnout-reload-{name}-{node.name}")

    async def _reload(self, entry: Entry, node: TritonNode) -> None:
        try:
            await node.load(entry.name, entry.configs.get(node.name))
            entry.missing.discard(node.name)
            log.warning("%s loaded again on node %s", entry.name, node.name)
        except TurnoutError as exc:
            log.error("%s could not be loaded again on node %s: %s", entry.name, node.name, exc.message)
            entry.reason = f"loading it again on {node.name} failed ({exc.message}); retrying at the next health check"
        finally:
            self._reloading.pop((entry.name, node.name), None)
            if entry.state is EntryState.degraded and not entry.missing:
                entry.state, entry.reason = EntryState.ready, ""
            self.changed()

    # --- health: crashed stubs are never restarted by Triton, so we do it ---
    async def probe(self) -> None:
        for entry in self:
            if not entry.ready or not entry.probed or entry.name in self._healing:
                continue
            for node in entry.serving_nodes:
                if not node.healthy:
                    continue
                seen = entry.heals
                try:
                    await node.probe(entry.name)
                except NotReady as exc:
                    if exc.details.get("crashed"):
                        self.report_crash(entry.name, "found by the health probe", seen=seen)
                except TurnoutError:
                    pass

    def generation(self, name: str) -> int:
        """How many restarts ``name`` has completed (a caller keeps it to report a crash it saw)."""
        entry = self._entries.get(name)
        return entry.heals if entry is not None else 0

    def record_memory(self, measured: dict[str, dict[str, list[int]]]) -> None:
        """The bytes each entry's instances use per node; an instance over its entry's limit is restarted."""
        for entry in self:
            for node in entry.nodes:
                if node.name not in measured:
                    continue
                instances = measured[node.name].get(entry.name, [])
                entry.memory[node.name] = instances
                self.metrics.memory.labels(entry.name, node.name).set(sum(instances))
                largest = max(instances, default=0)
                if entry.memory_limit and largest > entry.memory_limit and entry.state in SERVING:
                    self.report_crash(entry.name, f"an instance used {_size(largest)}, over its memory limit of "
                                                  f"{_size(entry.memory_limit)}", crashed=False)

    def report_crash(self, name: str, reason: str, *, seen: int | None = None, crashed: bool = True) -> None:
        """Heal an entry whose stub process died (from a failed request or a probe), or restart one that must
        be (``crashed=False``: over its memory limit); once at a time. ``seen``: the entry's generation when
        the caller started; a failure seen by a call older than the last restart is that restart's past."""
        entry = self._entries.get(name)
        if entry is None or name in self._healing or entry.state not in (*SERVING, EntryState.restarting):
            return
        if seen is not None and seen != entry.heals:
            return
        entry.restarts += 1
        entry.last_crash = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}: {reason}"
        now = time.monotonic()
        entry.crash_times = [t for t in entry.crash_times if now - t < CRASH_WINDOW_SECONDS] + [now]
        self.metrics.restarts.labels(name).inc()
        why = f"its process crashed ({reason})" if crashed else reason
        self.set_state(entry, EntryState.restarting, f"{why}; restarting")
        self._healing[name] = asyncio.create_task(self._heal(entry), name=f"turnout-heal-{name}")

    async def _heal(self, entry: Entry) -> None:
        # A model that crashes again and again waits longer each time instead of restarting in a loop.
        recent = len(entry.crash_times)
        delay = 0.0 if recent <= 1 else min(MAX_BACKOFF_SECONDS, 2.0 ** (recent - 2))
        entry.reason += f" in {delay:g} s" if delay else ""
        try:
            await asyncio.sleep(delay)
            await self.unload(entry.name, entry.nodes)
            await asyncio.gather(*(node.load(entry.name, entry.configs.get(node.name)) for node in entry.nodes))
            entry.state, entry.reason = EntryState.ready, ""
            log.warning("%s restarted after a crash (%d restarts)", entry.name, entry.restarts)
        except TurnoutError as exc:
            entry.state, entry.reason = EntryState.failed, f"restart after a crash failed: {exc.message}"
        finally:
            entry.heals += 1
            self._healing.pop(entry.name, None)
            self.changed()

    async def stop(self) -> None:
        tasks = [*self._healing.values(), *self._reloading.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"
