"""The gateway's runtime: its nodes, what is loaded where, and the routing table built from it.

``Gateway`` owns state that outlives a request: the Triton nodes (embedded or from nodes.yaml), the
status of every repository model, where each deployment is placed, and the current :class:`Routes`.
The data plane reads ``gateway.routes``; the control plane changes state and calls :meth:`rebuild_routes`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from gateway.auth import Credentials
from gateway.catalog import EntryInfo, read_entry, scan
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
LOAD_CONCURRENCY = 4


@dataclass
class ModelStatus:
    info: EntryInfo
    state: str = "loading"  # loading, ready, failed, unloaded
    reason: str = ""
    nodes: tuple[Node, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        manifest = self.info.manifest
        return {
            "name": self.info.name,
            "version": self.info.version,
            "entry": self.info.entry,
            "kind": self.info.kind,
            "state": self.state,
            "reason": self.reason,
            "nodes": [n.name for n in self.nodes],
            "description": manifest.description if manifest else "",
            "tags": manifest.tags if manifest else {},
        }


@dataclass
class Placement:
    """Where a deployment's current entry is loaded, and whether it serves."""

    entry: str
    nodes: tuple[Node, ...] = ()
    state: str = "creating"
    reason: str = ""


@dataclass
class Gateway:
    settings: GatewaySettings
    metrics: Metrics = field(default_factory=Metrics)
    nodes: dict[str, Node] = field(default_factory=dict)
    models: dict[str, ModelStatus] = field(default_factory=dict)
    placements: dict[tuple[str, str], Placement] = field(default_factory=dict)
    routes: Routes = field(default_factory=Routes)
    ready: bool = False
    embedded: EmbeddedTriton | None = None

    def __post_init__(self) -> None:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.settings.deployments_repository.mkdir(parents=True, exist_ok=True)
        self.state = StateStore(self.settings.database)
        self.credentials = Credentials(self.settings.state_dir, self.settings.admin_key)
        self.registry = Registry(self.settings.state_dir / "registry")
        self._tasks: list[asyncio.Task[None]] = []
        self.control_lock = asyncio.Lock()

    # --- lifecycle ---
    async def start(self) -> None:
        specs = await asyncio.to_thread(self._node_specs)
        timeout = self.settings.upstream_timeout_seconds
        self.nodes = {spec.name: Node(spec, timeout) for spec in specs}
        for node in self.nodes.values():
            self.metrics.node_up.labels(node.name, node.spec.pool).set(1)
        self.rebuild_routes()
        self._tasks.append(asyncio.create_task(self._initial_load(), name="turnout-initial-load"))
        self._tasks.append(asyncio.create_task(self._watch_health(), name="turnout-health"))

    def _node_specs(self) -> list[NodeSpec]:
        if self.settings.nodes_file is not None:
            return load_nodes_file(self.settings.nodes_file)
        self.settings.repository.mkdir(parents=True, exist_ok=True)
        self.embedded = EmbeddedTriton(
            repository=self.settings.repository.resolve(),
            extra_repositories=[self.settings.deployments_repository.resolve()],
            work_dir=self.settings.state_dir / "triton",
        ).start()
        log.info("embedded Triton serving on %s (log %s)", self.embedded.http_url, self.embedded.log_file)
        return [NodeSpec(
            name="embedded", url=self.embedded.http_url, grpc_url=self.embedded.grpc_url,
            pool=self.settings.default_pool, log_dir=self.embedded.log_dir,
        )]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Our keep-alive connections must close before Triton stops, or they hold up its exit.
        await asyncio.gather(*(node.close() for node in self.nodes.values()))
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        self.state.close()

    async def _initial_load(self) -> None:
        try:
            await self.load_repository()
            await self.restore_deployments()
        finally:
            self.ready = True
            log.info("gateway ready: %d models, %d deployments", len(self.models), len(self.placements))

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval_seconds)
            for node in list(self.nodes.values()):
                up = await node.check_health()
                self.metrics.node_up.labels(node.name, node.spec.pool).set(1 if up else 0)

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

    # --- repository models ---
    async def load_repository(self) -> None:
        entries = await asyncio.to_thread(scan, self.settings.repository)
        gate = asyncio.Semaphore(LOAD_CONCURRENCY)

        async def one(info: EntryInfo) -> None:
            async with gate:
                await self.load_model(info)

        await asyncio.gather(*(one(info) for info in entries))

    async def load_model(self, info: EntryInfo) -> ModelStatus:
        status = ModelStatus(info)
        self.models[info.entry] = status
        self.rebuild_routes()
        nodes = tuple(self.pool(self.settings.default_pool))
        if info.problem:
            status.state, status.reason = "failed", info.problem
        elif not nodes:
            status.state, status.reason = "failed", f"no node in pool {self.settings.default_pool!r}"
        else:
            try:
                await asyncio.gather(*(node.load(info.entry) for node in nodes))
                status.state, status.nodes = "ready", nodes
            except TurnoutError as exc:
                status.state, status.reason = "failed", exc.message
                log.error("model %s (entry %s) failed to load: %s", info.name, info.entry, exc.message)
        self.rebuild_routes()
        return status

    async def reload_entry(self, entry: str) -> ModelStatus | None:
        info = await asyncio.to_thread(read_entry, self.settings.repository / entry)
        return None if info is None else await self.load_model(info)

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

    def entry_config(self, record: DeploymentRecord, node: Node, nodes_used: int) -> dict[str, Any]:
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
        return json_format.MessageToDict(config, preserving_proto_field_name=True)

    async def place(self, record: DeploymentRecord) -> Placement:
        """Load the record's entry on nodes of its pool; the result says ready or failed (and why)."""
        placement = Placement(record.entry)
        try:
            record.pool, nodes = self.choose_nodes(record)
            await asyncio.gather(*(
                node.load(record.entry, self.entry_config(record, node, len(nodes))) for node in nodes
            ))
            placement.nodes, placement.state = tuple(nodes), "ready"
        except TurnoutError as exc:
            placement.state, placement.reason = "failed", exc.message
            log.error("deployment %s/%s failed: %s", record.endpoint, record.name, exc.message)
        return placement

    async def unload_entry(self, entry: str, nodes: tuple[Node, ...]) -> None:
        await asyncio.gather(*(node.unload(entry) for node in nodes), return_exceptions=True)

    async def restore_deployments(self) -> None:
        for record in self.state.deployments():
            placement = await self.place(record)
            self.placements[(record.endpoint, record.name)] = placement
            record.nodes = [n.name for n in placement.nodes]
            record.state, record.reason = placement.state, placement.reason
            with self.state.transaction() as db:
                self.state.put_deployment(db, record)
        self.rebuild_routes()

    # --- routes ---
    def rebuild_routes(self) -> None:
        models: dict[str, dict[int, Served]] = {}
        for status in self.models.values():
            info = status.info
            target = Target(info.entry, status.nodes) if status.state == "ready" else None
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
                    target = Target(placement.entry, placement.nodes) if placement.state == "ready" else None
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
        self.routes = Routes(models=models, endpoints=endpoints)


def entry_for(endpoint: str, deployment: str, generation: int) -> str:
    return f"{endpoint}.{deployment}.g{generation}"
