"""The data plane, free of any transport: pick the deployment or model version, call its node, count.

REST routes and the gRPC service only translate to and from these calls.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.auth import Credentials, check_endpoint_access
from gateway.entries import Entries
from gateway.metrics import Metrics
from gateway.nodes import TritonNode
from gateway.routing import DEPLOYMENT_HEADER, MODEL_VERSION_HEADER, EndpointRoute, RouteTable, Served, Target
from gateway.settings import GatewaySettings
from turnout.errors import BadInput, Overloaded, ScoringTimeout, TurnoutError, Unauthorized
from turnout.wire import ScoringResult

log = logging.getLogger("turnout.gateway.dataplane")
MAX_PENDING_MIRRORS = 256


@dataclass(frozen=True)
class Resolved:
    """Where one request goes: the target, and the names the response and the metrics report."""

    target: Target
    served: Served
    kind: str  # "endpoint" or "model"
    name: str  # endpoint or model name
    deployment: str  # deployment name, or the model version as text
    mirror: str | None = None  # deployment to copy this request to

    @property
    def answered_by(self) -> tuple[str, str]:
        """The response header naming who answered: the deployment, or the model version."""
        return (DEPLOYMENT_HEADER, self.deployment) if self.kind == "endpoint" else (MODEL_VERSION_HEADER,
                                                                                      self.deployment)


class DataPlane:
    """Gets the route table and the entries' leases, nothing else of the runtime."""

    def __init__(self, routes: RouteTable, entries: Entries, credentials: Credentials, settings: GatewaySettings,
                 metrics: Metrics) -> None:
        self.routes, self.entries, self.credentials = routes, entries, credentials
        self.settings, self.metrics = settings, metrics
        self._rng = random.Random()
        self._mirrors: set[asyncio.Task[None]] = set()

    # --- resolution ---
    def check_model_access(self, presented: str | None) -> None:
        if not self.settings.allow_anonymous and not self.credentials.is_admin(presented):
            raise Unauthorized("model URLs need 'Authorization: Bearer <admin key>' (or a gateway in dev mode)")

    def resolve_model(self, name: str, version: int | None, presented: str | None, *, v2: bool = False) -> Resolved:
        self.check_model_access(presented)
        number, served = self.routes.current.model(name, version)
        if served.kind == "triton" and not v2:
            raise BadInput(f"model {name!r} is a plain Triton model: call it at /v2/models/{name}/infer")
        target = served.ready_target(f"model {name!r} version {number}")
        return Resolved(target, served, "model", name, str(number))

    def endpoint_route(self, name: str, presented: str | None) -> EndpointRoute:
        """The endpoint, if the credential opens it. An unknown endpoint answers as a known one would to a
        bad credential (401), so names cannot be enumerated; only the admin key learns it does not exist."""
        route = self.routes.current.endpoints.get(name)
        if route is None:
            if self.credentials.is_admin(presented):
                return self.routes.current.endpoint(name)  # 404, naming the known ones
            raise Unauthorized(f"endpoint {name!r} needs 'Authorization: Bearer <key>'" if presented is None
                               else f"the key is not valid for endpoint {name!r}")
        check_endpoint_access(self.credentials, name, route.auth_mode, route.key_hashes, presented, route.identity)
        return route

    def resolve_endpoint(self, name: str, pinned: str | None, presented: str | None) -> Resolved:
        route = self.endpoint_route(name, presented)
        deployment = pinned or route.choose(self._rng)
        served = route.deployment(deployment)
        try:
            target = served.ready_target(f"deployment {deployment!r}")
        except TurnoutError as exc:  # an answer from a chosen deployment names it, errors included
            raise exc.with_header(DEPLOYMENT_HEADER, deployment) from None
        return Resolved(target, served, "endpoint", name, deployment, None if pinned else self._mirror_for(route))

    def _mirror_for(self, route: EndpointRoute) -> str | None:
        if route.mirror is None:
            return None
        deployment, percent = route.mirror
        return deployment if self._rng.random() * 100 < percent else None

    # --- scoring ---
    async def score(self, resolved: Resolved, body: bytes, meta: bytes) -> ScoringResult:
        self.mirror(resolved, lambda copy: self._call(copy, body, meta, live=False))
        return await self._call(resolved, body, meta)

    async def _call(self, resolved: Resolved, body: bytes, meta: bytes, live: bool = True) -> ScoringResult:
        target = resolved.target
        result = await self.guarded(resolved, lambda node: node.score(target.entry, body, meta, target.coalescing),
                                    live=live)
        return result  # type: ignore[no-any-return]

    async def forward(self, resolved: Resolved, method: str, suffix: str, body: bytes,
                      headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """An Open Inference Protocol call passed through to the resolved entry (``suffix``: "/infer");
        an inference is mirrored as a /score request is."""
        if method == "POST" and suffix == "/infer":
            self.mirror(resolved, lambda copy: self._forward(copy, method, suffix, body, headers, live=False))
        return await self._forward(resolved, method, suffix, body, headers)

    async def _forward(self, resolved: Resolved, method: str, suffix: str, body: bytes, headers: dict[str, str],
                       live: bool = True) -> tuple[int, dict[str, str], bytes]:
        path = f"/v2/models/{resolved.target.entry}{suffix}"
        answer = await self.guarded(resolved, lambda node: node.forward(method, path, body, headers), live=live)
        return answer  # type: ignore[no-any-return]

    async def guarded(self, resolved: Resolved, call: Callable[[TritonNode], Awaitable[Any]], *,
                      live: bool = True) -> Any:
        """Bound in-flight requests, bound time, count the outcome (``live``: a caller's request, not a
        mirror copy, which has counters of its own); a failure names who answered. The request holds a
        lease on its entry (per entry: a deployment's old and new generation drain separately)."""
        key = resolved.target.entry
        limit = resolved.served.max_inflight or self.settings.max_inflight_per_deployment
        if self.entries.inflight[key] >= limit:
            if live:
                self.metrics.observe(resolved.kind, resolved.name, resolved.deployment, 429, 0.0)
            raise Overloaded(f"{resolved.kind} {resolved.name!r} has {limit} requests in flight; retry shortly"
                             ).with_header(*resolved.answered_by)
        self.entries.acquire(key)
        started = time.perf_counter()
        generation = self.entries.generation(key)
        code = 500
        timeout = resolved.served.timeout
        try:
            node = resolved.target.pick()
            try:
                answer = await (asyncio.wait_for(call(node), timeout) if timeout else call(node))
            except TurnoutError as exc:  # off the hot path: maybe once more, on another node
                answer = await self._elsewhere(resolved, call, node, exc)
            code = answer.status if isinstance(answer, ScoringResult) else answer[0] if isinstance(answer, tuple) else 200
            return answer
        except TurnoutError as exc:
            if exc.details.get("crashed"):
                bound = resolved.served.script_timeout
                if bound is not None and time.perf_counter() - started >= bound:
                    # The backend's watchdog ended a process stuck past its bound in a call Python could not
                    # interrupt (turnout/scoring/guard.py): for the caller that is the timeout it is.
                    exc = ScoringTimeout(f"{resolved.kind} {resolved.name!r}: the script did not return within its "
                                         f"timeout_seconds ({bound:g} s); its process was ended and is restarted")
                    self.entries.report_crash(key, f"a call ran past timeout_seconds ({bound:g} s) and was ended",
                                              seen=generation)
                else:
                    self.entries.report_crash(key, "a request found its process gone", seen=generation)
            code = int(exc.status)
            raise exc.with_header(*resolved.answered_by) from None
        except TimeoutError:
            code = 504
            raise ScoringTimeout(f"{resolved.kind} {resolved.name!r} did not answer in time").with_header(
                *resolved.answered_by) from None
        finally:
            self.entries.release(key)
            if live:
                self.metrics.observe(resolved.kind, resolved.name, resolved.deployment, code,
                                     time.perf_counter() - started)

    async def _elsewhere(self, resolved: Resolved, call: Callable[[TritonNode], Awaitable[Any]], node: TritonNode,
                         failure: TurnoutError) -> Any:
        """Send a failed call once more, to another node, when ``node`` provably never ran it (it lacks
        the entry, or the connection was never made); otherwise the failure stands."""
        target, timeout = resolved.target, resolved.served.timeout
        if failure.details.get("missing"):
            self.entries.report_missing(target.entry, node)
        elif not failure.details.get("not_sent"):
            raise failure
        other = target.other_than(node)
        if other is None:
            raise failure
        return await (asyncio.wait_for(call(other), timeout) if timeout else call(other))

    def mirror(self, resolved: Resolved, send: Callable[[Resolved], Awaitable[Any]]) -> None:
        """Send a copy of a live request to the endpoint's mirror deployment, when it drew one: ``send``
        makes the same call on another target. Whatever the protocol, copies are counted apart."""
        if resolved.mirror is None:
            return
        deployment = resolved.mirror
        if len(self._mirrors) >= MAX_PENDING_MIRRORS:
            self.metrics.mirror.labels(resolved.name, deployment, "dropped").inc()
            return
        task = asyncio.create_task(self._mirror(resolved.name, deployment, send))
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)

    async def _mirror(self, endpoint: str, deployment: str, send: Callable[[Resolved], Awaitable[Any]]) -> None:
        """A copy of a live request; its answer and errors are counted and dropped, never returned."""
        try:
            served = self.routes.current.endpoint(endpoint).deployment(deployment)
            copy = Resolved(served.ready_target(f"deployment {deployment!r}"), served, "endpoint", endpoint, deployment)
            answer = await send(copy)
            status = answer.status if isinstance(answer, ScoringResult) else answer[0] if isinstance(answer, tuple) else 200
            outcome = "ok" if status < 400 else "error"
        except TurnoutError:
            outcome = "error"
        except Exception:  # a mirror must never surface anything
            log.exception("mirror request to %s/%s failed", endpoint, deployment)
            outcome = "error"
        self.metrics.mirror.labels(endpoint, deployment, outcome).inc()

    async def close(self) -> None:
        for task in list(self._mirrors):
            task.cancel()
        await asyncio.gather(*self._mirrors, return_exceptions=True)
