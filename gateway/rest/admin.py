"""The control plane over HTTP (admin credential): endpoints, deployments, traffic, keys, logs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse

from gateway.rest.deps import Admin, Control, read_body
from gateway.schemas import EndpointSpec, EndpointUpdate, RegenerateKeys
from turnout.errors import UnsupportedMediaType

router = APIRouter(prefix="/admin", tags=["control plane"], dependencies=[Admin])
MAX_ARCHIVE = 2 * 1024 * 1024 * 1024


@router.get("/endpoints")
async def list_endpoints(control: Control) -> list[dict[str, Any]]:
    return control.list_endpoints()


@router.post("/endpoints", status_code=201)
async def create_endpoint(spec: EndpointSpec, control: Control) -> dict[str, Any]:
    return await control.create_endpoint(spec)


@router.get("/endpoints/{endpoint}")
async def get_endpoint(endpoint: str, control: Control) -> dict[str, Any]:
    return control.get_endpoint(endpoint)


@router.patch("/endpoints/{endpoint}")
async def update_endpoint(endpoint: str, update: EndpointUpdate, control: Control) -> dict[str, Any]:
    return await control.update_endpoint(endpoint, update)


@router.delete("/endpoints/{endpoint}", status_code=204)
async def delete_endpoint(endpoint: str, control: Control) -> Response:
    await control.delete_endpoint(endpoint)
    return Response(status_code=204)


@router.get("/endpoints/{endpoint}/history")
async def history(endpoint: str, control: Control) -> list[dict[str, Any]]:
    return control.history(endpoint)


@router.post("/endpoints/{endpoint}/credentials")
async def get_credentials(endpoint: str, control: Control) -> dict[str, Any]:
    return control.get_credentials(endpoint)


@router.post("/endpoints/{endpoint}/regenerate-keys")
async def regenerate_keys(endpoint: str, body: RegenerateKeys, control: Control) -> dict[str, Any]:
    return await control.regenerate_key(endpoint, body.key_type)


@router.get("/endpoints/{endpoint}/deployments")
async def list_deployments(endpoint: str, control: Control) -> list[dict[str, Any]]:
    return control.list_deployments(endpoint)


@router.put("/endpoints/{endpoint}/deployments/{deployment}")
async def put_deployment(
    endpoint: str, deployment: str, request: Request, control: Control,
    all_traffic: bool = Query(False, description="Send all of the endpoint's traffic to it once ready."),
) -> dict[str, Any]:
    """Body: a gzipped tar of the package (made by `gateway deployment create`). Creates the deployment,
    or rolls it to a new generation; it takes traffic only once loaded and ready."""
    if request.headers.get("content-type", "").split(";")[0] not in ("application/gzip", "application/x-gzip"):
        raise UnsupportedMediaType("upload the deployment as application/gzip (gateway deployment create does)")
    archive = await read_body(request, MAX_ARCHIVE)
    return await control.create_or_update_deployment(endpoint, deployment, archive, all_traffic)


@router.get("/endpoints/{endpoint}/deployments/{deployment}")
async def get_deployment(endpoint: str, deployment: str, control: Control) -> dict[str, Any]:
    return control.get_deployment(endpoint, deployment)


@router.delete("/endpoints/{endpoint}/deployments/{deployment}", status_code=204)
async def delete_deployment(endpoint: str, deployment: str, control: Control) -> Response:
    await control.delete_deployment(endpoint, deployment)
    return Response(status_code=204)


@router.get("/endpoints/{endpoint}/deployments/{deployment}/logs", response_class=PlainTextResponse)
async def deployment_logs(
    endpoint: str, deployment: str, control: Control, lines: int = Query(200, ge=1, le=10000),
    build: bool = Query(False, description="Its environment's build log instead of its script's log."),
) -> str:
    return control.logs(endpoint, deployment, lines, build)
