"""The composition root: ``create_app(settings)`` wires the gateway's parts; nothing happens at import.

Start: the node provider brings the fleet up, the drop zone loads the repository, the deployments are
placed again, orphans left on the nodes are unloaded; then the repository watcher and the health loop
(node health, crashed-stub probe) run until the app stops. Tests pass their own ``provider`` (fake nodes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from gateway.auth import Credentials
from gateway.batch_control import BatchControl
from gateway.batch_runner import BatchRunner
from gateway.batch_state import BatchStore
from gateway.controlplane import ControlPlane
from gateway.dataplane import DataPlane
from gateway.deployments import Deployments
from gateway.dropzone import DropZone
from gateway.entries import Entries
from gateway.fleet import Fleet, NodeProvider, provider_for
from gateway.metrics import Metrics
from gateway.models import RepositoryModels
from gateway.rest import admin, batch, documented, errors, fastpath, scoring, system, v2
from gateway.rest.middleware import RequestIdMiddleware
from gateway.routing import RouteTable
from gateway.services import Services
from gateway.settings import GatewaySettings
from gateway.state import StateStore
from packager import scratch
from packager.registry import Registry

log = logging.getLogger("turnout.gateway")


class GatewayApp(FastAPI):
    """FastAPI, with the scoring POSTs answered before Starlette's middleware stack (rest/fastpath.py)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            target = fastpath.match_score_path(scope["path"])
            if target is not None:
                await fastpath.handle(self.state.services.dataplane, target, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def build_services(settings: GatewaySettings, provider: NodeProvider | None = None) -> Services:
    for folder in (settings.state_dir, settings.deployments_repository, settings.built_repository):
        folder.mkdir(parents=True, exist_ok=True)
    settings.state_dir.chmod(0o700)  # keys, secrets and the state database live here
    scratch.sweep(settings.repository, settings.built_repository, settings.deployments_repository)
    metrics = Metrics()
    state = StateStore(settings.database)
    credentials = Credentials(settings.state_dir, settings.admin_key)
    registry = Registry(settings.state_dir / "registry")
    fleet = Fleet(provider or provider_for(settings, metrics), metrics)
    entries = Entries(metrics)
    models = RepositoryModels(entries, fleet, settings)
    deployments = Deployments(entries, fleet, state, settings)
    routes = RouteTable(models, deployments, state)
    # Deployments register in a registry of their own: no dropped package's name can meet theirs.
    deployment_registry = Registry(settings.state_dir / "deployment-registry")
    controlplane = ControlPlane(state, credentials, deployment_registry, deployments, fleet, settings,
                                base_url=f"http://{settings.host}:{settings.port}")
    batch_store = BatchStore(state)
    return Services(
        settings=settings, metrics=metrics, state=state, credentials=credentials, registry=registry,
        fleet=fleet, entries=entries, models=models, deployments=deployments, routes=routes,
        dataplane=DataPlane(routes, entries, credentials, settings, metrics),
        controlplane=controlplane,
        dropzone=DropZone(models, registry, settings),
        batch=BatchControl(batch_store, BatchRunner(batch_store, deployments, entries, metrics), credentials,
                           deployment_registry, deployments, controlplane, settings),
    )


def expected_entries(services: Services) -> set[str]:
    """What the nodes may have loaded: what is served here, and what a repository still holds (an entry
    in a repository belongs to the drop zone)."""
    settings = services.settings
    expected = services.entries.loaded_names()
    for repository in (settings.repository, settings.built_repository, settings.deployments_repository):
        if repository.is_dir():
            expected |= {p.name for p in repository.iterdir() if (p / "config.pbtxt").is_file()}
    return expected


async def initial_load(services: Services) -> None:
    try:
        await services.dropzone.initial_scan()
        await services.deployments.restore(keep=services.batch.live_entries())
        await services.batch.restore()
        await services.fleet.unload_orphans(expected_entries(services))
    except Exception:
        log.exception("initial load failed")
    finally:
        services.loaded = True
        services.routes.publish()
        log.info("gateway ready: %d models, %d deployments", len(services.models.all()),
                 len(services.state.deployments()))


async def watch_health(services: Services) -> None:
    """Node health; entries a node lost (a restarted Triton comes back empty) loaded there again; crashed
    stubs (Triton never restarts them) healed."""
    while True:
        await services.fleet.wait(services.settings.health_interval_seconds)
        await services.fleet.check_health()
        for node, loaded in await services.fleet.loaded_entries():
            services.entries.reconcile(node, loaded)
        services.entries.record_memory(await asyncio.to_thread(services.fleet.provider.memory))
        await services.entries.probe()


@asynccontextmanager
async def running(services: Services) -> AsyncIterator[None]:
    """The gateway's life: start everything, serve, stop everything (in the reverse order)."""
    settings = services.settings
    services.fleet.start()
    services.routes.publish()
    tasks: list[asyncio.Task[None]] = []

    async def load_then_watch() -> None:
        await initial_load(services)
        if settings.watch:
            tasks.append(asyncio.create_task(services.dropzone.watch(), name="turnout-dropzone"))

    tasks.append(asyncio.create_task(load_then_watch(), name="turnout-initial-load"))
    tasks.append(asyncio.create_task(watch_health(services), name="turnout-health"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await services.dropzone.stop()
        await services.batch.runner.stop()
        await services.entries.stop()
        await services.dataplane.close()
        # Our keep-alive connections must close before Triton stops, or they hold up its exit.
        await services.fleet.close()
        await asyncio.to_thread(services.fleet.provider.stop)
        services.state.close()


def create_app(settings: GatewaySettings, provider: NodeProvider | None = None) -> FastAPI:
    services = build_services(settings, provider)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running(services):
            grpc_server = None
            if settings.grpc_port is not None:
                from gateway.grpc_service import start_grpc_server

                grpc_server = await start_grpc_server(services, settings.host, settings.grpc_port)
                app.state.grpc_port = grpc_server.port
            try:
                yield
            finally:
                if grpc_server is not None:
                    await grpc_server.stop()

    app = GatewayApp(
        title="Turnout gateway",
        version="0.1.0",
        description="Stable scoring URLs for models and endpoints served by NVIDIA Triton.",
        lifespan=lifespan,
    )
    app.state.services = services
    errors.install(app)
    for router in (scoring.router, v2.router, admin.router, batch.admin, batch.public, system.router):
        app.include_router(router)
    app.add_middleware(RequestIdMiddleware)
    documented.install(app)
    return app
