"""Fake Triton nodes behind the gateway's node interface (gateway.nodes.TritonNode), for in-process tests
of gateway logic. Integration tests use the real tritonserver instead."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from fastapi import FastAPI

from gateway.app import create_app
from gateway.coalesce import Coalescing
from gateway.nodes import NodeSpec, TritonNode
from gateway.services import Services
from gateway.settings import GatewaySettings
from turnout.errors import NodeUnreachable, NotReady, ScriptLoadError, TurnoutError
from turnout.wire import Answer, ScoringResult


class FakeNode:
    """Answers every scoring request with the entry's name and the body it got."""

    def __init__(self, name: str = "fake-0", pool: str = "cpu") -> None:
        self.spec = NodeSpec(name=name, url=f"http://{name}.invalid:8000", pool=pool)
        self.name = name
        self.healthy = True
        self.loaded: dict[str, dict[str, Any] | None] = {}
        self.fail_load: dict[str, str] = {}  # entry -> why its load fails
        self.crashed: set[str] = set()  # entries whose stub "died"
        self.loads: list[str] = []
        self.fail_score: dict[str, TurnoutError] = {}  # entry -> the error every request gets
        self.probes: list[str] = []
        self.load_seconds = 0.0  # how long a load takes (a big model)
        self.down = False  # fails requests in flight (they may have run)
        self.refusing = False  # refuses connections (nothing was sent)
        self.memory: dict[str, list[int]] = {}  # entry -> bytes per instance, as the provider measures it
        self.probe_seconds = 0.0  # how long a probe takes

    async def score_many(self, entry: str, items: Sequence[tuple[bytes, bytes]]) -> list[Answer]:
        return [await self.score(entry, body, meta) for body, meta in items]

    async def score(self, entry: str, body: bytes, meta: bytes, coalescing: Coalescing = Coalescing()) -> ScoringResult:
        if self.down:
            self.healthy = False
            raise NodeUnreachable(f"node {self.name} is unreachable", details={"node": self.name})
        if self.refusing:
            self.healthy = False
            raise NodeUnreachable(f"node {self.name} is unreachable", details={"node": self.name, "not_sent": True})
        if entry in self.crashed:
            raise NotReady("the model's process crashed; it is being restarted", details={"crashed": True})
        if entry not in self.loaded:  # as gateway.nodes reads Triton's "unknown model" answer
            raise NotReady("the model is not loaded on its node", details={"node": self.name, "missing": True})
        if entry in self.fail_score:
            raise type(self.fail_score[entry])(self.fail_score[entry].message)
        return ScoringResult(body=orjson.dumps({"entry": entry, "node": self.name, "echo": body.decode()}))

    async def forward(self, method: str, path: str, body: bytes,
                      headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        return 200, {"content-type": "application/json"}, orjson.dumps({"name": path.split("/")[3]})

    async def load(self, entry: str, config: dict[str, Any] | None = None) -> None:
        self.loads.append(entry)
        await asyncio.sleep(self.load_seconds)
        if entry in self.fail_load:
            raise ScriptLoadError(self.fail_load[entry], details={"node": self.name})
        self.crashed.discard(entry)
        self.loaded[entry] = config

    async def unload(self, entry: str) -> None:
        self.loaded.pop(entry, None)

    async def probe(self, entry: str) -> None:
        self.probes.append(entry)
        crashed = entry in self.crashed  # as the stub was when the probe reached it
        await asyncio.sleep(self.probe_seconds)
        if crashed:
            raise NotReady("the model's process crashed", details={"node": self.name, "crashed": True})

    async def index(self) -> list[dict[str, Any]]:
        if self.down:
            raise NodeUnreachable(f"node {self.name} is unreachable")
        return [{"name": entry, "state": "READY"} for entry in self.loaded]

    async def check_health(self) -> bool:
        self.healthy = not self.down
        return self.healthy

    def entry_log(self, entry: str, lines: int = 200) -> str | None:
        return f"log of {entry} on {self.name}"

    async def close(self) -> None:
        pass


class FakeProvider:
    def __init__(self, *nodes: FakeNode) -> None:
        self.nodes = list(nodes) or [FakeNode()]

    def start(self, changed: Callable[[str, bool], None]) -> list[TritonNode]:
        self.changed = changed
        return list(self.nodes)

    def stop(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {}

    def memory(self) -> dict[str, dict[str, list[int]]]:
        return {node.name: dict(node.memory) for node in self.nodes}


@dataclass
class InProcess:
    app: FastAPI
    services: Services
    nodes: list[FakeNode]
    http: httpx.AsyncClient

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.services.credentials.admin_key}"}


def settings_for(root: Path, **changes: Any) -> GatewaySettings:
    options: dict[str, Any] = {"repository": root / "repository", "state_dir": root / "state", "watch": False,
                               "health_interval_seconds": 0.05, "drop_quiet_seconds": 0}
    return GatewaySettings(**(options | changes))


@asynccontextmanager
async def inprocess(settings: GatewaySettings, *nodes: FakeNode) -> AsyncIterator[InProcess]:
    """The real app over fake nodes, its lifespan running, an httpx client speaking ASGI to it."""
    provider = FakeProvider(*nodes)
    app = create_app(settings, provider=provider)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            yield InProcess(app, services, provider.nodes, http)
