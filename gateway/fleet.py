"""The node fleet: which Triton nodes there are, in which pools, whether they answer, and their logs.

Where the nodes come from is a :class:`NodeProvider`, chosen by the composition root (gateway/app.py):
an embedded Triton started on this machine, the nodes listed in a nodes file, or fakes in unit tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from gateway.metrics import Metrics
from gateway.nodes import Node, NodeSpec, TritonNode, load_nodes_file
from gateway.settings import GatewaySettings
from turnout.errors import TurnoutError
from turnout.triton.embedded import EmbeddedTriton
from turnout.triton.processes import stub_memory
from turnout.triton.supervisor import Supervisor

log = logging.getLogger("turnout.gateway.fleet")


class NodeProvider(Protocol):
    def start(self, changed: Callable[[str, bool], None]) -> list[TritonNode]:
        """Bring the nodes up (or find them); called once, on the event loop's thread. A provider that
        supervises its nodes calls ``changed(node name, up)`` (from any thread) when one dies or is back."""
        ...

    def stop(self) -> None:
        """Stop what :meth:`start` started (blocking; the nodes' connections are closed already)."""
        ...

    def status(self) -> dict[str, Any]:
        """What the provider knows beyond the nodes' health (a supervised Triton's restarts), for /healthz."""
        ...

    def memory(self) -> dict[str, dict[str, list[int]]]:
        """Per node it can see into, per entry: the bytes each instance uses (blocking: reads /proc)."""
        ...


def _node(spec: NodeSpec, settings: GatewaySettings, metrics: Metrics) -> Node:
    return Node(spec, settings.upstream_timeout_seconds, settings.coalesce_depth, metrics)


class NodesFileProvider:
    """Triton nodes run elsewhere and are listed in a nodes file."""

    def __init__(self, path: Path, settings: GatewaySettings, metrics: Metrics) -> None:
        self.path, self.settings, self.metrics = path, settings, metrics

    def start(self, changed: Callable[[str, bool], None]) -> list[TritonNode]:
        return [_node(spec, self.settings, self.metrics) for spec in load_nodes_file(self.path)]

    def stop(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {}

    def memory(self) -> dict[str, dict[str, list[int]]]:
        return {}  # remote nodes: not measured here (docs/reliability.md)


class EmbeddedProvider:
    """One Triton on this machine, from the nvidia-pytriton wheel, over the gateway's three repositories,
    supervised: when it dies, what it left is reaped and it is started again on its address
    (turnout/triton/supervisor.py); the fleet hears of both at once."""

    NAME = "embedded"

    def __init__(self, settings: GatewaySettings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.triton: EmbeddedTriton | None = None
        self.supervisor: Supervisor | None = None

    def start(self, changed: Callable[[str, bool], None]) -> list[TritonNode]:
        # On the event loop's own thread, not a worker: the embedded Triton stops when its starter thread
        # ends. Startup blocks the loop for well under a second, before anything is served.
        settings = self.settings
        settings.repository.mkdir(parents=True, exist_ok=True)
        self.triton = EmbeddedTriton(
            repository=settings.repository.resolve(),
            extra_repositories=[settings.built_repository.resolve(), settings.deployments_repository.resolve()],
            work_dir=settings.state_dir / "triton",
        ).start()
        log.info("embedded Triton serving on %s (log %s)", self.triton.http_url, self.triton.log_file)
        self.supervisor = Supervisor(self.triton, on_down=lambda: changed(self.NAME, False),
                                     on_up=lambda: changed(self.NAME, True))
        self.supervisor.start()
        spec = NodeSpec(name=self.NAME, url=self.triton.http_url, grpc_url=self.triton.grpc_url,
                        pool=settings.default_pool, log_dir=self.triton.log_dir)
        return [_node(spec, settings, self.metrics)]

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        elif self.triton is not None:
            self.triton.stop()

    def status(self) -> dict[str, Any]:
        return {"embedded_triton": self.supervisor.status.as_dict()} if self.supervisor is not None else {}

    def memory(self) -> dict[str, dict[str, list[int]]]:
        pid = self.triton.pid if self.triton is not None and self.triton.is_running() else None
        return {self.NAME: stub_memory(pid)} if pid is not None else {}


def provider_for(settings: GatewaySettings, metrics: Metrics) -> NodeProvider:
    if settings.nodes_file is not None:
        return NodesFileProvider(settings.nodes_file, settings, metrics)
    return EmbeddedProvider(settings, metrics)


class Fleet:
    def __init__(self, provider: NodeProvider, metrics: Metrics) -> None:
        self.provider = provider
        self.metrics = metrics
        self.nodes: dict[str, TritonNode] = {}
        # Set when a supervised node died or is back: the health loop runs at once instead of at its period.
        self.wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.nodes = {node.name: node for node in self.provider.start(self._changed)}
        for node in self.nodes.values():
            self.metrics.node_up.labels(node.name, node.spec.pool).set(1)

    def _changed(self, name: str, up: bool) -> None:
        """From the provider's thread: a node died (fail over now) or is back (repopulate it now)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._mark, name, up)

    def _mark(self, name: str, up: bool) -> None:
        node = self.nodes.get(name)
        if node is not None and not up:
            node.healthy = False
            self.metrics.node_up.labels(node.name, node.spec.pool).set(0)
        self.wake.set()

    async def wait(self, seconds: float) -> None:
        """Sleep until the next health round: ``seconds``, or sooner when a node died or came back."""
        try:
            await asyncio.wait_for(self.wake.wait(), seconds)
        except TimeoutError:
            pass
        self.wake.clear()

    async def close(self) -> None:
        """Close every node's connections (before the provider stops Triton: keep-alives block its exit)."""
        for node in self.nodes.values():
            await node.close()

    def pool(self, name: str) -> list[TritonNode]:
        return [n for n in self.nodes.values() if n.spec.pool == name]

    def pools(self) -> list[str]:
        return sorted({n.spec.pool for n in self.nodes.values()})

    @property
    def any_healthy(self) -> bool:
        return any(n.healthy for n in self.nodes.values())

    async def check_health(self) -> None:
        for node in list(self.nodes.values()):
            up = await node.check_health()
            self.metrics.node_up.labels(node.name, node.spec.pool).set(1 if up else 0)

    async def loaded_entries(self) -> list[tuple[TritonNode, set[str]]]:
        """What each healthy node says it has loaded (nodes that do not answer are left out)."""
        found = []
        for node in list(self.nodes.values()):
            if not node.healthy:
                continue
            try:
                index = await node.index()
            except TurnoutError:
                continue
            found.append((node, {str(item["name"]) for item in index if item.get("state") == "READY"}))
        return found

    def node_log(self, entry: str, nodes: Iterable[TritonNode] = (), lines: int = 200) -> str:
        """The entry's own log from each node (every node when ``nodes`` is empty)."""
        parts = []
        for node in tuple(nodes) or tuple(self.nodes.values()):
            text = node.entry_log(entry, lines)
            if text is None:
                text = f"(node {node.name} keeps its logs to itself: set log_dir in the nodes file)"
            if text:
                parts.append(f"==> {node.name} <==\n{text}")
        return "\n".join(parts)

    async def unload_orphans(self, expected: set[str]) -> None:
        """Unload what a node has loaded that nothing here expects (left over from a killed gateway)."""
        for node in self.nodes.values():
            try:
                index = await node.index()
            except TurnoutError:
                continue
            for item in index:
                if item.get("state") == "READY" and item.get("name") not in expected:
                    log.warning("unloading orphan %s from node %s", item["name"], node.name)
                    await node.unload(str(item["name"]))
