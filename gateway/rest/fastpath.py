"""The scoring hot path: ``POST /models/{m}[/versions/{v}]/score`` and ``POST /endpoints/{e}/score``
answered straight from ASGI, before Starlette's middleware stack and FastAPI's dependency solving
(together about 60% of the gateway's CPU per request when profiled). The FastAPI routes for the same URLs
call the same :func:`score`, so both transports behave alike; the fast path only skips framework work.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import orjson
from starlette.types import Receive, Scope, Send

from gateway.auth import bearer
from gateway.dataplane import DataPlane
from gateway.rest.errors import render_error
from gateway.routing import DEPLOYMENT_HEADER, MODEL_VERSION_HEADER
from turnout import wire
from turnout.errors import PayloadTooLarge, TurnoutError

log = logging.getLogger("turnout.gateway.http")
# One JSON line per scoring request (request id, target, deployment, status, time) at INFO.
access_log = logging.getLogger("turnout.gateway.access")

MAX_REQUEST_ID = 100
_SCORE_PATH = re.compile(
    r"^/(?:models/(?P<model>[^/]+)(?:/versions/(?P<version>\d+))?|endpoints/(?P<endpoint>[^/]+))/score$"
)
# Never forwarded to scoring scripts: credentials and hop-by-hop headers.
_NOT_FORWARDED = frozenset({
    "authorization", "cookie", "content-length", "connection", "keep-alive", "transfer-encoding", "host",
    "accept-encoding", "te", "upgrade", "proxy-authorization",
})


@dataclass(frozen=True)
class ScoreTarget:
    kind: str  # "model" or "endpoint"
    name: str
    version: int | None = None


def match_score_path(path: str) -> ScoreTarget | None:
    found = _SCORE_PATH.match(path)
    if found is None:
        return None
    if found["endpoint"]:
        return ScoreTarget("endpoint", found["endpoint"])
    return ScoreTarget("model", found["model"], int(found["version"]) if found["version"] else None)


def request_id_from(given: str | None) -> str:
    return given if given and len(given) <= MAX_REQUEST_ID else uuid.uuid4().hex


def _title(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


def request_meta(method: str, query: str, headers: Mapping[str, str], request_id: str) -> bytes:
    """The HTTP facts a scoring script may read (Azure's request_headers, @rawhttp), as the backend wants."""
    forwarded = {_title(k): v for k, v in headers.items() if k not in _NOT_FORWARDED}
    forwarded["X-Request-Id"] = request_id
    return wire.encode_request_meta(method, query, forwarded)


async def score(dataplane: DataPlane, target: ScoreTarget, method: str, query: str, headers: Mapping[str, str],
                body: bytes, request_id: str) -> tuple[int, dict[str, str], bytes]:
    """Score one request whose body is already read (``headers``: lower-case names). Resolving the target
    comes after the body on purpose: between resolving and counting the request in flight there is no
    await, so a swap can never drain and unload a target while a request is still reading its body."""
    credential = bearer(headers.get("authorization"))
    if target.kind == "endpoint":
        resolved = dataplane.resolve_endpoint(target.name, headers.get(DEPLOYMENT_HEADER), credential)
    else:
        resolved = dataplane.resolve_model(target.name, target.version, credential)
    result = await dataplane.score(resolved, body, request_meta(method, query, headers, request_id))
    answer = dict(result.headers)
    answer["content-type"] = result.content_type
    header, value = resolved.answered_by
    answer[header] = value
    return result.status, answer, result.body


async def _read_body(receive: Receive, declared: str | None, limit: int) -> bytes | None:
    """The whole body, or None when the client went away."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(send: Send, status: int, headers: dict[str, str], body: bytes) -> None:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def handle(dataplane: DataPlane, target: ScoreTarget, scope: Scope, receive: Receive, send: Send) -> None:
    started = time.perf_counter()
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    request_id = request_id_from(headers.get("x-request-id"))
    try:
        body = await _read_body(receive, headers.get("content-length"), dataplane.settings.max_body_bytes)
        if body is None:
            return
        query = scope.get("query_string", b"").decode("latin-1")
        status, answer, payload = await score(dataplane, target, scope["method"], query, headers, body, request_id)
    except TurnoutError as exc:
        status, answer, payload = render_error(exc, request_id, scope["path"])
    except Exception:
        log.exception("request %s failed unexpectedly", request_id)
        status, answer, payload = render_error(TurnoutError("internal error"), request_id, scope["path"])
    answer["x-request-id"] = request_id
    await _send(send, status, answer, payload)
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(orjson.dumps({
            "request_id": request_id, target.kind: target.name, "status": status,
            "deployment": answer.get(DEPLOYMENT_HEADER) or answer.get(MODEL_VERSION_HEADER),
            "ms": round((time.perf_counter() - started) * 1e3, 3),
        }).decode())
