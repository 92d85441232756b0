"""Request-scoped helpers shared by the routers: the planes, the caller's credential, the body."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import Depends, Request, Response

from gateway.auth import bearer
from gateway.batch_control import BatchControl
from gateway.controlplane import ControlPlane
from gateway.dataplane import DataPlane
from gateway.services import Services
from turnout.errors import PayloadTooLarge, Unauthorized

REQUEST_ID_KEY = "turnout.request_id"


class JSONBody(Response):
    """JSON rendered by orjson; for bodies built by hand (errors, health) rather than response models."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content)


async def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


async def get_dataplane(request: Request) -> DataPlane:
    return request.app.state.services.dataplane  # type: ignore[no-any-return]


async def get_controlplane(request: Request) -> ControlPlane:
    return request.app.state.services.controlplane  # type: ignore[no-any-return]


async def presented_credential(request: Request) -> str | None:
    return bearer(request.headers.get("authorization"))


async def require_admin(request: Request) -> None:
    # async: FastAPI runs a plain-def dependency in its thread pool, a thread hop per request
    services: Services = request.app.state.services
    if not services.credentials.is_admin(bearer(request.headers.get("authorization"))):
        raise Unauthorized("the control plane needs 'Authorization: Bearer <admin key>'")


Runtime = Annotated[Services, Depends(get_services)]
Data = Annotated[DataPlane, Depends(get_dataplane)]
Control = Annotated[ControlPlane, Depends(get_controlplane)]
Credential = Annotated[str | None, Depends(presented_credential)]
Admin = Depends(require_admin)


def request_id(request: Request) -> str:
    return str(request.scope.get(REQUEST_ID_KEY, ""))


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def get_batch(request: Request) -> BatchControl:
    return request.app.state.services.batch  # type: ignore[no-any-return]


Batch = Annotated[BatchControl, Depends(get_batch)]
