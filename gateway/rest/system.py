"""Liveness, readiness and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse

from gateway.rest.deps import Data, JSONBody, Runtime

router = APIRouter(tags=["system"])


@router.get("/healthz", summary="The gateway can serve: its process answers and a Triton node does")
async def healthz(services: Runtime) -> Response:
    """For a liveness probe: 503 when no node answers (a dead embedded Triton is restarted by the gateway
    itself; this says so while it happens, and keeps saying so if it cannot start again)."""
    nodes = {n.name: n.healthy for n in services.fleet.nodes.values()}
    body: dict[str, Any] = {"status": "ok" if services.fleet.any_healthy else "unhealthy", "nodes": nodes,
                            **services.fleet.provider.status()}
    if not services.fleet.any_healthy:
        body["reason"] = "no Triton node answers" if nodes else "no Triton node is configured"
    return JSONBody(body, status_code=200 if services.fleet.any_healthy else 503)


@router.get("/readyz", summary="Initial loading is done and a node answers")
async def readyz(services: Runtime) -> Response:
    nodes = {n.name: n.healthy for n in services.fleet.nodes.values()}
    body: dict[str, Any] = {"status": "ready" if services.ready else "not ready", "loaded": services.loaded,
                            "nodes": nodes}
    return JSONBody(body, status_code=200 if services.ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(dataplane: Data) -> Response:
    return Response(dataplane.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
