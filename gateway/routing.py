"""The routing table: which Triton entry on which nodes answers each URL.

A :class:`Routes` snapshot is immutable. :class:`RouteTable` builds a new one whenever an entry or the
durable state changes (it subscribes to both) and swaps it in with one assignment, so a request sees
either the old table or the new one, never half of a change; nobody rebuilds routes by hand.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass, field

from gateway.coalesce import Coalescing
from gateway.deployments import Deployments
from gateway.entries import GONE, EntryState
from gateway.models import RepositoryModels
from gateway.nodes import TritonNode
from gateway.state import StateStore
from turnout.errors import NodeUnreachable, NotFound, NotReady

# Azure's header (and gRPC metadata key) that pins a deployment, and names the one that served.
DEPLOYMENT_HEADER = "azureml-model-deployment"
# Names the model version that answered a /models URL.
MODEL_VERSION_HEADER = "x-turnout-model-version"


@dataclass(frozen=True)
class Target:
    """One entry loaded on one or more nodes; requests rotate over the healthy ones."""

    entry: str
    nodes: tuple[TritonNode, ...]
    coalescing: Coalescing = Coalescing()
    _turn: itertools.count[int] = field(default_factory=itertools.count, compare=False, repr=False)

    def pick(self) -> TritonNode:
        if len(self.nodes) == 1:
            return self.nodes[0]
        start = next(self._turn)
        for i in range(len(self.nodes)):
            node = self.nodes[(start + i) % len(self.nodes)]
            if node.healthy:
                return node
        raise NodeUnreachable(f"no healthy node serves {self.entry}")

    def other_than(self, node: TritonNode) -> TritonNode | None:
        """A healthy node besides ``node``, for a request that provably never ran on ``node``."""
        return next((n for n in self.nodes if n is not node and n.healthy), None)


@dataclass(frozen=True)
class Served:
    """A model version or a deployment: its target when ready, else why not."""

    target: Target | None
    state: EntryState
    reason: str = ""
    kind: str = "python_scoring"  # or "triton": a plain Triton model, served over /v2 only
    max_inflight: int | None = None
    timeout: float | None = None  # the deployment's request_timeout (Azure's request_settings)
    private: bool = False  # a deployment's load failure is for its owner (get-logs), not its scorers
    script_timeout: float | None = None  # timeout_seconds of its manifest (a stuck call ends its process)

    def ready_target(self, what: str) -> Target:
        if self.target is None and self.state in GONE:
            raise NotFound(f"{what} is no longer served: {self.reason}")
        if self.target is None and self.state is EntryState.failed and self.private:
            # Its reason names server paths and the script's own exception: the owner reads it with
            # 'gateway deployment get-logs'; waiting will not help, so no Retry-After.
            raise NotReady(f"{what} failed to load and cannot serve; its owner can see why with "
                           "'gateway deployment show' and 'get-logs'", retry_after=None)
        if self.target is None:
            detail = f": {self.reason}" if self.reason else ""
            retry = 5 if self.state in (EntryState.building, EntryState.loading, EntryState.restarting) else 30
            raise NotReady(f"{what} is {self.state.value}{detail}", retry_after=retry)
        return self.target


@dataclass(frozen=True)
class EndpointRoute:
    name: str
    auth_mode: str
    key_hashes: tuple[str, ...]
    deployments: dict[str, Served]
    traffic: tuple[tuple[str, int], ...]  # (deployment, weight) with weight > 0
    mirror: tuple[str, int] | None = None
    identity: tuple[str, int] = ("", 0)  # what its tokens are bound to (auth.Token)
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
            live = [v for v, served in versions.items() if served.state not in GONE | {EntryState.failed}]
            version = max(ready or live or versions)
        if version not in versions:
            raise NotFound(f"model {name!r} has no version {version} (versions: {', '.join(map(str, sorted(versions)))})")
        return version, versions[version]

    def endpoint(self, name: str) -> EndpointRoute:
        try:
            return self.endpoints[name]
        except KeyError:
            raise NotFound(f"no endpoint named {name!r}") from None


class RouteTable:
    """The current :class:`Routes`, republished after every change of entries or state."""

    def __init__(self, models: RepositoryModels, deployments: Deployments, state: StateStore) -> None:
        self.models, self.deployments, self.state = models, deployments, state
        self.current = Routes()
        models.entries.subscribe(self.publish)
        state.subscribe(self.publish)

    def publish(self) -> None:
        self.current = Routes(models=self._models(), endpoints=self._endpoints(), removed=dict(self.models.removed))

    def _models(self) -> dict[str, dict[int, Served]]:
        models: dict[str, dict[int, Served]] = {}
        for model in self.models.all():
            info = model.info
            target = Target(info.entry, model.serving_nodes, info.coalescing) if model.ready else None
            models.setdefault(info.name, {})[info.version] = Served(target, model.state, model.reason, kind=info.kind,
                                                                    script_timeout=model.script_timeout)
        return models

    def _endpoints(self) -> dict[str, EndpointRoute]:
        endpoints = {}
        records = self.state.deployments()
        for endpoint in self.state.endpoints():
            served = {}
            for record in (d for d in records if d.endpoint == endpoint.name):
                entry = self.deployments.entry_of(record)
                limit = (record.max_concurrent_requests * record.instance_count
                         if record.max_concurrent_requests else None)
                if entry is None:  # being created, or not placed yet since this gateway started
                    why = record.reason if record.state == "creating" else "being placed on its nodes"
                    served[record.name] = Served(None, EntryState.loading, why, timeout=record.request_timeout_seconds)
                    continue
                target = Target(entry.name, entry.serving_nodes, entry.coalescing) if entry.ready else None
                served[record.name] = Served(target, entry.state, entry.reason, max_inflight=limit,
                                             timeout=record.request_timeout_seconds, private=True,
                                             script_timeout=entry.script_timeout)
            mirror = next(iter(endpoint.mirror_traffic.items()), None)
            endpoints[endpoint.name] = EndpointRoute(
                name=endpoint.name,
                auth_mode=endpoint.auth_mode,
                key_hashes=tuple(endpoint.key_hashes),
                deployments=served,
                traffic=tuple((d, w) for d, w in sorted(endpoint.traffic.items()) if w > 0),
                mirror=mirror if mirror and mirror[1] > 0 else None,
                identity=(endpoint.uid, endpoint.key_generation),
            )
        return endpoints
