"""The gateway's runtime: its nodes, what is loaded where, and the routing table built from it.

``Gateway`` owns state that outlives a request: the Triton nodes (embedded or from nodes.yaml), every
loaded entry (repository models and deployment generations) with its health, the requests in flight per
entry, and the current :class:`Routes`. The data plane reads ``gateway.routes``; the control plane and
the drop zone change state and call :meth:`rebuild_routes`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from gateway.auth import Credentials
from gateway.catalog import EntryInfo
from gateway.coalesce import Coalescing
from gateway.metrics import Metrics
from gateway.nodes import Node, NodeSpec, load_nodes_file, pool_for_instance_type
from gateway.routing import EndpointRoute, Routes, Served, Target
from gateway.settings import GatewaySettings
from gateway.state import DeploymentRecord, StateStore
from packager.registry import Registry
from turnout.errors import NotReady, TurnoutError
from turnout.triton.config import EntryConfig, InstanceKind, build_model_config
from turnout.triton.embedded import EmbeddedTriton

log = logging.getLogger("turnout.gateway")
CRASH_WINDOW_SECONDS = 300.0
MAX_BACKOFF_SECONDS = 60.0


@dataclass(kw_only=True)
class Loaded:
    """One entry the gateway loads on nodes: its state and its crash history."""

    entry: str
    nodes: tuple[Node, ...] = ()
    state: str = "loading"  # loading, ready, restarting, failed, unloaded, removed
    reason: str = ""
    restarts: int = 0
    last_crash: str = ""
    crash_times: list[float] = field(default_factory=list)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # load-time config per node name

    def health(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason, "nodes": [n.name for n in self.nodes],
                "restarts": self.restarts, "last_crash": self.last_crash}


@dataclass(kw_only=True)
class ModelStatus(Loaded):
    info: EntryInfo
    drop: str | None = None  # the repository item (folder, archive, YAML, entry) this came from
    log_tail: str = ""  # why it failed, from the entry's own log

    def as_dict(self) -> dict[str, Any]:
        manifest = self.info.manifest
        return {
            "name": self.info.name, "version": self.info.version, "entry": self.info.entry,
            "kind": self.info.kind, "drop": self.drop, **self.health(),
            **({"log_tail": self.log_tail} if self.state == "failed" and self.log_tail else {}),
            "description": manifest.description if manifest else "",
            "tags": manifest.tags if manifest else {},
        }


@dataclass(kw_only=True)
class Placement(Loaded):
    """Where a deployment's current generation is loaded."""

    state: str = "creating"
    coalescing: Coalescing = field(default_factory=Coalescing)


@dataclass
class Gateway:
    settings: GatewaySettings
    metrics: Metrics = field(default_factory=Metrics)
    nodes: dict[str, Node] = field(default_factory=dict)
    models: dict[str, ModelStatus] = field(default_factory=dict)  # by entry
    placements: dict[tuple[str, str], Placement] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)  # model name -> why its URL is gone
    routes: Routes = field(default_factory=Routes)
    ready: bool = False
    embedded: EmbeddedTriton | None = None

    def __post_init__(self) -> None:
        for folder in (self.settings.state_dir, self.settings.deployments_repository, self.settings.built_repository):
            folder.mkdir(parents=True, exist_ok=True)
        self.state = StateStore(self.settings.database)
        self.credentials = Credentials(self.settings.state_dir, self.settings.admin_key)
        self.registry = Registry(self.settings.state_dir / "registry")
        self.inflight: defaultdict[str, int] = defaultdict(int)  # requests in flight per entry
        self.control_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._healing: dict[str, asyncio.Task[None]] = {}
        self.dropzone: Any = None  # gateway.dropzone.DropZone, set by start()

    # --- lifecycle ---
    async def start(self) -> None:
        from gateway.dropzone import DropZone

        # On the event loop's own thread, not a worker: the embedded Triton stops when its starter thread
        # ends. Startup blocks the loop for well under a second, before anything is served.
        specs = self._node_specs()
        timeout = self.settings.upstream_timeout_seconds
        self.nodes = {spec.name: Node(spec, timeout, self.settings.coalesce_depth, self.metrics) for spec in specs}
        for node in self.nodes.values():
            self.metrics.node_up.labels(node.name, node.spec.pool).set(1)
        self.dropzone = DropZone(self)
        self.rebuild_routes()
        self._tasks.append(asyncio.create_task(self._initial_load(), name="turnout-initial-load"))
        self._tasks.append(asyncio.create_task(self._watch_health(), name="turnout-health"))

    def _node_specs(self) -> list[NodeSpec]:
        if self.settings.nodes_file is not None:
            return load_nodes_file(self.settings.nodes_file)
        self.settings.repository.mkdir(parents=True, exist_ok=True)
        self.embedded = EmbeddedTriton(
            repository=self.settings.repository.resolve(),
            extra_repositories=[self.settings.built_repository.resolve(),
                                self.settings.deployments_repository.resolve()],
            work_dir=self.settings.state_dir / "triton",
        ).start()
        log.info("embedded Triton serving on %s (log %s)", self.embedded.http_url, self.embedded.log_file)
        return [NodeSpec(
            name="embedded", url=self.embedded.http_url, grpc_url=self.embedded.grpc_url,
            pool=self.settings.default_pool, log_dir=self.embedded.log_dir,
        )]

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._healing.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.dropzone is not None:
            await self.dropzone.stop()
        # Our keep-alive connections must close before Triton stops, or they hold up its exit.
        await asyncio.gather(*(node.close() for node in self.nodes.values()))
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        self.state.close()

    async def _initial_load(self) -> None:
        try:
            await self.dropzone.initial_scan()
            await self.restore_deployments()
            await self.reconcile_nodes()
        except Exception:
            log.exception("initial load failed")
        finally:
            self.ready = True
            log.info("gateway ready: %d models, %d deployments", len(self.models), len(self.placements))
        if self.settings.watch:
            self._tasks.append(asyncio.create_task(self.dropzone.watch(), name="turnout-dropzone"))

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval_seconds)
            for node in list(self.nodes.values()):
                up = await node.check_health()
                self.metrics.node_up.labels(node.name, node.spec.pool).set(1 if up else 0)
            await self.probe_entries()

    # --- entries, wherever they come from ---
    def loaded(self) -> list[Loaded]:
        return [*self.models.values(), *self.placements.values()]

    def find(self, entry: str) -> Loaded | None:
        return self.models.get(entry) or next((p for p in self.placements.values() if p.entry == entry), None)

    async def drain(self, entry: str, timeout: float = 30.0) -> None:
        """Wait until an entry that takes no new requests has none in flight (bounded)."""
        deadline = time.monotonic() + timeout
        while self.inflight.get(entry, 0) > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def unload_entry(self, entry: str, nodes: tuple[Node, ...]) -> None:
        await asyncio.gather(*(node.unload(entry) for node in nodes), return_exceptions=True)

    async def retire(self, loaded: Loaded, state: str, reason: str, remove_dir: bool) -> None:
        """Stop routing to an entry, let its requests finish, unload it (and its built folder)."""
        loaded.state, loaded.reason = state, reason
        self.rebuild_routes()
        await self.drain(loaded.entry)
        await self.unload_entry(loaded.entry, loaded.nodes)
        loaded.nodes = ()
        if remove_dir:
            for repository in (self.settings.built_repository, self.settings.deployments_repository):
                await asyncio.to_thread(shutil.rmtree, repository / loaded.entry, True)

    # --- health: crashed stubs are never restarted by Triton, so we do it ---
    async def probe_entries(self) -> None:
        for loaded in self.loaded():
            if loaded.state != "ready":
                continue
            for node in loaded.nodes:
                if not node.healthy:
                    continue
                try:
                    await node.probe(loaded.entry)
                except NotReady as exc:
                    if exc.details.get("crashed"):
                        self.report_crash(loaded.entry, "found by the health probe")
                except TurnoutError:
                    pass

    def report_crash(self, entry: str, reason: str) -> None:
        """Heal an entry whose stub process died (from a failed request or a probe); once at a time."""
        loaded = self.find(entry)
        if loaded is None or entry in self._healing or loaded.state not in ("ready", "restarting"):
            return
        loaded.state, loaded.reason = "restarting", f"its process crashed ({reason}); restarting"
        loaded.restarts += 1
        loaded.last_crash = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}: {reason}"
        now = time.monotonic()
        loaded.crash_times = [t for t in loaded.crash_times if now - t < CRASH_WINDOW_SECONDS] + [now]
        self.metrics.restarts.labels(entry).inc()
        self.rebuild_routes()
        self._healing[entry] = asyncio.create_task(self._heal(loaded), name=f"turnout-heal-{entry}")

    async def _heal(self, loaded: Loaded) -> None:
        # A model that crashes again and again waits longer each time instead of restarting in a loop.
        recent = len(loaded.crash_times)
        delay = 0.0 if recent <= 1 else min(MAX_BACKOFF_SECONDS, 2.0 ** (recent - 2))
        loaded.reason += f" in {delay:g} s" if delay else ""
        try:
            await asyncio.sleep(delay)
            await self.unload_entry(loaded.entry, loaded.nodes)
            await asyncio.gather(*(node.load(loaded.entry, loaded.configs.get(node.name)) for node in loaded.nodes))
            loaded.state, loaded.reason = "ready", ""
            log.warning("%s restarted after a crash (%d restarts)", loaded.entry, loaded.restarts)
        except TurnoutError as exc:
            loaded.state, loaded.reason = "failed", f"restart after a crash failed: {exc.message}"
        finally:
            self._healing.pop(loaded.entry, None)
            self.rebuild_routes()

    # --- pools ---
    def pool(self, name: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.spec.pool == name]

    def node_log(self, entry: str, nodes: tuple[Node, ...], lines: int = 200) -> str:
        parts = []
        for node in nodes or tuple(self.nodes.values()):
            text = node.entry_log(entry, lines)
            if text is None:
                text = f"(node {node.name} keeps its logs to itself: set log_dir in the nodes file)"
            if text:
                parts.append(f"==> {node.name} <==\n{text}")
        return "\n".join(parts)

    async def reconcile_nodes(self) -> None:
        """Unload what a node has loaded that nothing here serves and no repository holds any more
        (left over from a killed gateway). An entry still in a repository belongs to the drop zone."""
        expected = {loaded.entry for loaded in self.loaded() if loaded.nodes}
        for repository in (self.settings.repository, self.settings.built_repository,
                           self.settings.deployments_repository):
            if repository.is_dir():
                expected |= {p.name for p in repository.iterdir() if (p / "config.pbtxt").is_file()}
        for node in self.nodes.values():
            try:
                index = await node.index()
            except TurnoutError:
                continue
            for item in index:
                if item.get("state") == "READY" and item.get("name") not in expected:
                    log.warning("unloading orphan %s from node %s", item["name"], node.name)
                    await node.unload(str(item["name"]))

    # --- repository models ---
    async def load_model(self, info: EntryInfo, drop: str | None) -> ModelStatus:
        status = ModelStatus(entry=info.entry, info=info, drop=drop)
        previous = self.models.get(info.entry)
        if previous is not None and previous.state == "ready":
            status.nodes = previous.nodes  # a reload: the old one serves until the new one is ready
            status.state = "ready"
        self.models[info.entry] = status
        self.removed.pop(info.name, None)
        self.rebuild_routes()
        nodes = tuple(self.pool(self.settings.default_pool))
        if info.problem:
            status.state, status.reason = "failed", info.problem
        elif not nodes:
            status.state, status.reason = "failed", f"no node in pool {self.settings.default_pool!r}"
        else:
            try:
                await asyncio.gather(*(node.load(info.entry) for node in nodes))
                status.state, status.reason, status.nodes = "ready", "", nodes
            except TurnoutError as exc:
                status.state, status.reason = "failed", exc.message
                status.log_tail = self.node_log(info.entry, nodes, 20)
                log.error("model %s (entry %s) failed to load: %s", info.name, info.entry, exc.message)
        self.rebuild_routes()
        return status

    async def settle_versions(self, name: str) -> None:
        """Serve the newest ready versions of a model (``keep_versions`` of them); retire older ones."""
        ready = sorted((s for s in self.models.values() if s.info.name == name and s.state == "ready"),
                       key=lambda s: s.info.version, reverse=True)
        for old in ready[self.settings.keep_versions:]:
            built = (self.settings.built_repository / old.entry).is_dir()
            await self.retire(old, "unloaded", f"replaced by version {ready[0].info.version}", remove_dir=built)

    # --- deployments ---
    def choose_nodes(self, record: DeploymentRecord) -> tuple[str, list[Node]]:
        pool_name = pool_for_instance_type(
            record.instance_type, self.settings.instance_type_pools, self.settings.default_pool
        )
        pool = self.pool(pool_name)
        if not pool:
            pools = sorted({n.spec.pool for n in self.nodes.values()})
            raise NotReady(f"no node in pool {pool_name!r} for instance_type {record.instance_type!r} "
                           f"(pools: {', '.join(pools)})", retry_after=60)
        load = {n.name: 0 for n in pool}
        for placement in self.placements.values():
            for node in placement.nodes:
                if node.name in load:
                    load[node.name] += 1
        ordered = sorted(pool, key=lambda n: (load[n.name] >= n.spec.capacity, load[n.name], n.name))
        return pool_name, ordered[: min(record.instance_count, len(ordered))]

    def entry_config(self, record: DeploymentRecord, node: Node, nodes_used: int) -> mc.ModelConfig:
        """Load-time config for a node: its instance kind; the deployment's instances spread over nodes."""
        config = build_model_config(EntryConfig(
            name=record.entry,
            instance_kind=InstanceKind(node.spec.instance_kind),
            instance_count=math.ceil(record.instance_count / nodes_used),
        ))
        on_disk = self.settings.deployments_repository / record.entry / "config.pbtxt"
        if on_disk.exists():  # keep the package's batching settings
            built = text_format.Parse(on_disk.read_text(), mc.ModelConfig())
            config.max_batch_size = built.max_batch_size
            if built.HasField("dynamic_batching"):
                config.dynamic_batching.CopyFrom(built.dynamic_batching)
            else:
                config.ClearField("dynamic_batching")
        return config

    async def place(self, record: DeploymentRecord) -> Placement:
        """Load the record's entry on nodes of its pool; the result says ready or failed (and why)."""
        placement = Placement(entry=record.entry)
        try:
            record.pool, nodes = self.choose_nodes(record)
            configs = {node.name: self.entry_config(record, node, len(nodes)) for node in nodes}
            shapes = [Coalescing.of(c) for c in configs.values()]
            placement.coalescing = Coalescing(min(s.max_batch for s in shapes), max(s.instances for s in shapes))
            placement.configs = {name: json_format.MessageToDict(c, preserving_proto_field_name=True)
                                 for name, c in configs.items()}
            await asyncio.gather(*(node.load(record.entry, placement.configs[node.name]) for node in nodes))
            placement.nodes, placement.state = tuple(nodes), "ready"
        except TurnoutError as exc:
            placement.state, placement.reason = "failed", exc.message
            log.error("deployment %s/%s failed: %s", record.endpoint, record.name, exc.message)
        return placement

    async def restore_deployments(self) -> None:
        records = self.state.deployments()
        live = {r.entry for r in records}
        for record in records:
            placement = await self.place(record)
            self.placements[(record.endpoint, record.name)] = placement
            record.nodes = [n.name for n in placement.nodes]
            record.state, record.reason = placement.state, placement.reason
            with self.state.transaction() as db:
                self.state.put_deployment(db, record)
        # Generations a killed gateway left half-made or half-retired: nothing refers to them.
        for orphan in self.settings.deployments_repository.iterdir():
            if orphan.is_dir() and orphan.name not in live:
                await asyncio.to_thread(shutil.rmtree, orphan, True)
        self.rebuild_routes()

    # --- routes ---
    def rebuild_routes(self) -> None:
        models: dict[str, dict[int, Served]] = {}
        for status in self.models.values():
            info = status.info
            target = Target(info.entry, status.nodes, info.coalescing) if status.state == "ready" else None
            served = Served(target, status.state, status.reason, kind=info.kind)
            models.setdefault(info.name, {})[info.version] = served
        endpoints = {}
        deployments = self.state.deployments()
        for endpoint in self.state.endpoints():
            served_deployments = {}
            for record in (d for d in deployments if d.endpoint == endpoint.name):
                placement = self.placements.get((endpoint.name, record.name))
                limit = (record.max_concurrent_requests * record.instance_count
                         if record.max_concurrent_requests else None)
                if placement is None:  # not placed yet since this gateway started
                    served = Served(None, "loading", "being placed on its nodes", timeout=record.request_timeout_seconds)
                else:
                    target = (Target(placement.entry, placement.nodes, placement.coalescing)
                              if placement.state == "ready" else None)
                    served = Served(target, placement.state, placement.reason, max_inflight=limit,
                                    timeout=record.request_timeout_seconds)
                served_deployments[record.name] = served
            mirror = next(iter(endpoint.mirror_traffic.items()), None)
            endpoints[endpoint.name] = EndpointRoute(
                name=endpoint.name,
                auth_mode=endpoint.auth_mode,
                key_hashes=tuple(endpoint.key_hashes),
                deployments=served_deployments,
                traffic=tuple((d, w) for d, w in sorted(endpoint.traffic.items()) if w > 0),
                mirror=mirror if mirror and mirror[1] > 0 else None,
            )
        self.routes = Routes(models=models, endpoints=endpoints, removed=dict(self.removed))


def entry_for(endpoint: str, deployment: str, generation: int) -> str:
    return f"{endpoint}.{deployment}.g{generation}"
