"""Liveness, readiness and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from gateway.rest.deps import Data, JSONBody

router = APIRouter(tags=["system"])


@router.get("/healthz", summary="The gateway process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Initial loading is done and a node answers")
async def readyz(dataplane: Data) -> Response:
    gateway = dataplane.gateway
    nodes = {n.name: n.healthy for n in gateway.nodes.values()}
    ready = gateway.ready and any(nodes.values())
    body: dict[str, Any] = {"status": "ready" if ready else "not ready", "loaded": gateway.ready, "nodes": nodes}
    return JSONBody(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(dataplane: Data) -> Response:
    return Response(dataplane.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
