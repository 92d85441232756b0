"""Triton nodes and pools: where entries are loaded and requests are sent.

A node is one Triton server (the embedded one, or one listed in ``nodes.yaml``); a pool is the set of
nodes sharing a label such as ``cpu`` or ``gpu``. Each node keeps one pooled asyncio HTTP session, so the
hot path builds nothing per request and Triton's batcher sees concurrent requests.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.coalesce import Coalescer, Coalescing
from gateway.metrics import Metrics
from gateway.upstream import UpstreamPool
from packager.spec import read_yaml
from turnout import wire
from turnout.errors import (
    NodeUnreachable,
    NotReady,
    PackageError,
    ScoringTimeout,
    ScriptLoadError,
    TurnoutError,
    from_wire,
)
from turnout.manifest import InstanceKind
from turnout.wire import Answer, ScoringResult, decode_batch, encode_batch, only

log = logging.getLogger("turnout.gateway.nodes")


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Unique node name.")
    url: str = Field(description="Triton's HTTP URL, e.g. http://10.0.0.5:8000.")
    grpc_url: str | None = Field(default=None, description="Triton's gRPC address host:port (for gRPC clients).")
    pool: str = Field(default="cpu", description="Pool label that instance types map to (cpu, gpu, ...).")
    kind: InstanceKind | None = Field(default=None, description="Instance kind of entries here [default: by pool].")
    capacity: int = Field(default=64, ge=1, description="Most deployments placed on this node.")
    log_dir: Path | None = Field(default=None, description="Where this node's backend writes entry logs.")

    @property
    def instance_kind(self) -> InstanceKind:
        return self.kind or (InstanceKind.gpu if self.pool.lower().startswith("gpu") else InstanceKind.cpu)


class NodesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nodes: list[NodeSpec] = Field(min_length=1)


def load_nodes_file(path: Path) -> list[NodeSpec]:
    try:
        specs = NodesFile.model_validate(read_yaml(path)).nodes
    except ValidationError as exc:
        raise PackageError(f"{path}: {exc}") from None
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise PackageError(f"{path}: node names must be unique, got {names}")
    return specs


class TritonNode(Protocol):
    """What the gateway needs of a Triton node: :class:`Node` over HTTP, or a fake in unit tests."""

    spec: NodeSpec
    name: str
    healthy: bool

    async def score(self, entry: str, body: bytes, meta: bytes, coalescing: Coalescing = ...) -> ScoringResult: ...
    async def score_many(self, entry: str, items: Sequence[tuple[bytes, bytes]]) -> list[Answer]: ...
    async def forward(self, method: str, path: str, body: bytes,
                      headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]: ...
    async def load(self, entry: str, config: dict[str, Any] | None = None) -> None: ...
    async def unload(self, entry: str) -> None: ...
    async def probe(self, entry: str) -> None: ...
    async def index(self) -> list[dict[str, Any]]: ...
    async def check_health(self) -> bool: ...
    def entry_log(self, entry: str, lines: int = 200) -> str | None: ...
    async def close(self) -> None: ...


_NOT_LOADED = ("unknown model", "is not found", "is not ready", "no version is available", "unavailable")


def _triton_failure(status: int, text: str, node: str) -> TurnoutError:
    ours = from_wire(text)
    if ours is not None:
        return ours
    lowered = text.lower()
    if "stub process" in lowered and "not healthy" in lowered:
        return NotReady("the model's process crashed; it is being restarted", retry_after=2,
                        details={"node": node, "crashed": True})
    if any(marker in lowered for marker in _NOT_LOADED):
        # Triton did not run it: the gateway may send it to another node, and loads it here again.
        return NotReady("the model is not loaded on its node", details={"node": node, "missing": True})
    log.error("node %s answered %s: %s", node, status, text[:2000])
    return TurnoutError("the inference server failed the request")


class Node:
    def __init__(self, spec: NodeSpec, timeout: float, coalesce_depth: int = 4, metrics: Metrics | None = None) -> None:
        self.spec = spec
        self.metrics = metrics or Metrics()
        self.name = spec.name
        self.url = spec.url.rstrip("/")
        self.healthy = True
        self.coalesce_depth = coalesce_depth
        self._coalescers: dict[str, Coalescer] = {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        parsed = urlparse(self.url)
        self._scoring = UpstreamPool(parsed.hostname or "127.0.0.1", parsed.port or 80, timeout)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # One pooled session per node; identity encoding: Triton gzips answers for clients that offer it.
            connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                base_url=self.url, connector=connector, timeout=self._timeout,
                headers={"Accept-Encoding": "identity"}, skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def close(self) -> None:
        for coalescer in self._coalescers.values():
            coalescer.close()
        self._coalescers.clear()
        self._scoring.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        try:
            async with self.session.request(method, path, **kwargs) as response:
                return response.status, dict(response.headers), await response.read()
        except TimeoutError:
            raise ScoringTimeout(f"node {self.name} did not answer within {self._timeout.total:g} s") from None
        except aiohttp.ClientError as exc:
            self.healthy = False
            raise NodeUnreachable(f"node {self.name} is unreachable", details={"node": self.name}) from exc

    async def score(self, entry: str, body: bytes, meta: bytes, coalescing: Coalescing = Coalescing()) -> ScoringResult:
        """Score one request; concurrent ones may share a Triton request (gateway/coalesce.py)."""
        if coalescing.max_batch <= 1 or self.coalesce_depth <= 0:
            return only(await self.score_many(entry, ((body, meta),)))
        coalescer = self._coalescers.get(entry)
        if coalescer is None or coalescer.shape != coalescing:
            coalescer = self._coalescers[entry] = Coalescer(
                lambda items: self.score_many(entry, items), coalescing, self.coalesce_depth
            )
        return await coalescer.score(body, meta)

    async def score_many(self, entry: str, items: Sequence[tuple[bytes, bytes]]) -> list[Answer]:
        """One Triton request carrying ``items`` (body, meta); an answer or an error for each."""
        self.metrics.observe_batch(self.name, entry, len(items))
        return await self._infer(entry, items)

    async def _infer(self, entry: str, items: Sequence[tuple[bytes, bytes]]) -> list[Answer]:
        payload, header_length = encode_batch(items)
        extra = b"Inference-Header-Content-Length: %d\r\nContent-Type: application/octet-stream\r\n" % header_length
        try:
            status, headers, data = await self._scoring.post(f"/v2/models/{entry}/infer".encode(), extra, payload)
        except NodeUnreachable as exc:
            self.healthy = False
            raise NodeUnreachable(f"node {self.name} is unreachable", details={**exc.details, "node": self.name}) from exc
        if status != 200:
            raise _triton_failure(status, _error_text(data), self.name)
        length = headers.get(b"inference-header-content-length")
        return decode_batch(data, int(length) if length is not None else None, len(items))

    async def forward(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """Pass an Open Inference Protocol request through untouched (the path names the entry)."""
        return await self._call(method, path, data=body or None, headers=headers)

    async def load(self, entry: str, config: dict[str, Any] | None = None) -> None:
        body = {"parameters": {"config": orjson.dumps(config).decode()}} if config else {}
        status, _, data = await self._call("POST", f"/v2/repository/models/{entry}/load", json=body,
                                           timeout=aiohttp.ClientTimeout(total=900))
        if status != 200:
            raise ScriptLoadError(_error_text(data), details={"node": self.name})

    async def unload(self, entry: str) -> None:
        coalescer = self._coalescers.pop(entry, None)
        if coalescer is not None:
            coalescer.close()
        status, _, data = await self._call("POST", f"/v2/repository/models/{entry}/unload", json={})
        if status != 200:
            log.warning("node %s could not unload %s: %s", self.name, entry, _error_text(data))

    async def probe(self, entry: str) -> None:
        """Ask the entry's stub to answer without running user code (raises if its process is gone).
        Never coalesced: the backend takes a whole Triton request whose first META is a probe as one."""
        only(await self._infer(entry, ((b"", wire.PROBE_META),)))

    async def index(self) -> list[dict[str, Any]]:
        status, _, data = await self._call("POST", "/v2/repository/index", json={})
        return list(orjson.loads(data)) if status == 200 else []

    async def is_ready(self, entry: str) -> bool:
        status, _, _ = await self._call("GET", f"/v2/models/{entry}/ready")
        return status == 200

    async def check_health(self) -> bool:
        try:
            status, _, _ = await self._call("GET", "/v2/health/live", timeout=aiohttp.ClientTimeout(total=3))
            self.healthy = status == 200
        except TurnoutError:
            self.healthy = False
        return self.healthy

    def entry_log(self, entry: str, lines: int = 200) -> str | None:
        if self.spec.log_dir is None:
            return None
        path = self.spec.log_dir / f"{entry}.log"
        try:
            return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _error_text(data: bytes) -> str:
    try:
        return str(orjson.loads(data).get("error", data.decode("utf-8", "replace")))
    except (orjson.JSONDecodeError, AttributeError):
        return data.decode("utf-8", "replace")
