"""The gateway's parts, as wired by the composition root (gateway/app.py) and read by the transports.

A plain container: each part owns one concern (see docs/architecture.md); nothing here has behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.auth import Credentials
from gateway.batch_control import BatchControl
from gateway.controlplane import ControlPlane
from gateway.dataplane import DataPlane
from gateway.deployments import Deployments
from gateway.dropzone import DropZone
from gateway.entries import Entries
from gateway.fleet import Fleet
from gateway.metrics import Metrics
from gateway.models import RepositoryModels
from gateway.routing import RouteTable
from gateway.settings import GatewaySettings
from gateway.state import StateStore
from packager.registry import Registry


@dataclass
class Services:
    settings: GatewaySettings
    metrics: Metrics
    state: StateStore
    credentials: Credentials
    registry: Registry
    fleet: Fleet
    entries: Entries
    models: RepositoryModels
    deployments: Deployments
    routes: RouteTable
    dataplane: DataPlane
    controlplane: ControlPlane
    dropzone: DropZone
    batch: BatchControl
    loaded: bool = False  # the initial load (drops, deployments) is done

    @property
    def ready(self) -> bool:
        return self.loaded and self.fleet.any_healthy
