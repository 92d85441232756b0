"""The routing table: which Triton entry on which nodes answers each URL.

A :class:`Routes` snapshot is immutable; the control plane builds a new one and swaps it in with one
assignment, so a request sees either the old table or the new one, never half of a change.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass, field

from gateway.coalesce import Coalescing
from gateway.nodes import Node
from turnout.errors import NodeUnreachable, NotFound, NotReady

# Azure's header (and gRPC metadata key) that pins a deployment, and names the one that served.
DEPLOYMENT_HEADER = "azureml-model-deployment"


@dataclass(frozen=True)
class Target:
    """One entry loaded on one or more nodes; requests rotate over the healthy ones."""

    entry: str
    nodes: tuple[Node, ...]
    coalescing: Coalescing = Coalescing()
    _turn: itertools.count[int] = field(default_factory=itertools.count, compare=False, repr=False)

    def pick(self) -> Node:
        if len(self.nodes) == 1:
            return self.nodes[0]
        start = next(self._turn)
        for i in range(len(self.nodes)):
            node = self.nodes[(start + i) % len(self.nodes)]
            if node.healthy:
                return node
        raise NodeUnreachable(f"no healthy node serves {self.entry}")


@dataclass(frozen=True)
class Served:
    """A model version or a deployment: its target when ready, else why not."""

    target: Target | None
    state: str
    reason: str = ""
    kind: str = "python_scoring"  # or "triton": a plain Triton model, served over /v2 only
    max_inflight: int | None = None
    timeout: float | None = None  # the deployment's request_timeout (Azure's request_settings)

    def ready_target(self, what: str) -> Target:
        if self.target is None and self.state in ("unloaded", "removed"):
            raise NotFound(f"{what} is no longer served: {self.reason}")
        if self.target is None:
            detail = f": {self.reason}" if self.reason else ""
            raise NotReady(f"{what} is {self.state}{detail}", retry_after=5 if self.state == "loading" else 30)
        return self.target


@dataclass(frozen=True)
class EndpointRoute:
    name: str
    auth_mode: str
    key_hashes: tuple[str, ...]
    deployments: dict[str, Served]
    traffic: tuple[tuple[str, int], ...]  # (deployment, weight) with weight > 0
    mirror: tuple[str, int] | None = None
    _cumulative: tuple[int, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_cumulative", tuple(itertools.accumulate(w for _, w in self.traffic)))

    def choose(self, rng: random.Random) -> str:
        if not self.traffic:
            raise NotReady(f"endpoint {self.name!r} has no deployment taking traffic", retry_after=30)
        point = rng.random() * self._cumulative[-1]
        return self.traffic[bisect.bisect_right(self._cumulative, point)][0]

    def deployment(self, name: str) -> Served:
        try:
            return self.deployments[name]
        except KeyError:
            known = ", ".join(sorted(self.deployments)) or "none"
            raise NotFound(f"endpoint {self.name!r} has no deployment {name!r} (deployments: {known})") from None


@dataclass(frozen=True)
class Routes:
    models: dict[str, dict[int, Served]] = field(default_factory=dict)
    endpoints: dict[str, EndpointRoute] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)

    def model(self, name: str, version: int | None) -> tuple[int, Served]:
        versions = self.models.get(name)
        if not versions:
            if name in self.removed:
                raise NotFound(f"model {name!r} was removed: {self.removed[name]}")
            raise NotFound(f"no model named {name!r} in the repository")
        if version is None:
            ready = [v for v, served in versions.items() if served.target is not None]
            live = [v for v, served in versions.items() if served.state not in ("unloaded", "removed", "failed")]
            version = max(ready or live or versions)
        if version not in versions:
            raise NotFound(f"model {name!r} has no version {version} (versions: {', '.join(map(str, sorted(versions)))})")
        return version, versions[version]

    def endpoint(self, name: str) -> EndpointRoute:
        try:
            return self.endpoints[name]
        except KeyError:
            raise NotFound(f"no endpoint named {name!r}") from None
