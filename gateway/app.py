"""The app factory: ``create_app(settings)`` builds a gateway; nothing happens at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from gateway.controlplane import ControlPlane
from gateway.core import Gateway
from gateway.dataplane import DataPlane
from gateway.rest import admin, errors, fastpath, scoring, system, v2
from gateway.rest.middleware import RequestIdMiddleware
from gateway.settings import GatewaySettings

log = logging.getLogger("turnout.gateway")


class GatewayApp(FastAPI):
    """FastAPI, with the scoring POSTs answered before Starlette's middleware stack (rest/fastpath.py)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            target = fastpath.match_score_path(scope["path"])
            if target is not None:
                await fastpath.handle(self.state.dataplane, target, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: GatewaySettings) -> FastAPI:
    gateway = Gateway(settings)
    dataplane = DataPlane(gateway)
    controlplane = ControlPlane(gateway, dataplane, base_url=f"http://{settings.host}:{settings.port}")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        grpc_server = None
        if settings.grpc_port is not None:
            from gateway.grpc_service import start_grpc_server

            grpc_server = await start_grpc_server(dataplane, settings.host, settings.grpc_port)
            app.state.grpc_port = grpc_server.port
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop()
            await dataplane.close()
            await gateway.stop()

    app = GatewayApp(
        title="Turnout gateway",
        version="0.1.0",
        description="Stable scoring URLs for models and endpoints served by NVIDIA Triton.",
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.state.dataplane = dataplane
    app.state.controlplane = controlplane
    errors.install(app)
    for module in (scoring, v2, admin, system):
        app.include_router(module.router)
    app.add_middleware(RequestIdMiddleware)
    return app
