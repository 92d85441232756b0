"""Scoring URLs: a stable one per endpoint and one per model (and model version)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response

from gateway.auth import check_endpoint_access
from gateway.dataplane import Resolved
from gateway.rest.deps import DEPLOYMENT_HEADER, Control, Credential, Data, read_body, request_meta

router = APIRouter(tags=["scoring"])


async def _answer(request: Request, dataplane: Data, resolve: Callable[[], Resolved]) -> Response:
    # Read the body first: between resolving a target and counting the request in flight there must be
    # no await, or a swap could drain and unload the target while this request still reads its body.
    body = await read_body(request, dataplane.gateway.settings.max_body_bytes)
    resolved = resolve()
    result = await dataplane.score(resolved, body, request_meta(request))
    headers = dict(result.headers)
    if resolved.kind == "endpoint":
        headers[DEPLOYMENT_HEADER] = resolved.deployment
    else:
        headers["x-turnout-model-version"] = resolved.deployment
    return Response(result.body, status_code=result.status, media_type=result.content_type, headers=headers)


@router.api_route("/endpoints/{endpoint}/score", methods=["POST", "GET"], summary="Score on an endpoint")
async def score_endpoint(endpoint: str, request: Request, dataplane: Data, credential: Credential) -> Response:
    """The stable scoring URL. The deployment is picked by traffic weight unless the
    `azureml-model-deployment` header pins one; the response names the deployment that served."""
    pinned = request.headers.get(DEPLOYMENT_HEADER)
    return await _answer(request, dataplane, lambda: dataplane.resolve_endpoint(endpoint, pinned, credential))


@router.api_route("/models/{model}/score", methods=["POST", "GET"], summary="Score on a model's latest version")
async def score_model(model: str, request: Request, dataplane: Data, credential: Credential) -> Response:
    return await _answer(request, dataplane, lambda: dataplane.resolve_model(model, None, credential))


@router.api_route("/models/{model}/versions/{version}/score", methods=["POST", "GET"],
                  summary="Score on one version of a model")
async def score_model_version(
    model: str, version: int, request: Request, dataplane: Data, credential: Credential
) -> Response:
    return await _answer(request, dataplane, lambda: dataplane.resolve_model(model, version, credential))


@router.post("/endpoints/{endpoint}/token", summary="Exchange an endpoint key for an expiring token")
async def endpoint_token(endpoint: str, dataplane: Data, control: Control, credential: Credential) -> dict[str, Any]:
    route = dataplane.gateway.routes.endpoint(endpoint)
    # A key of this endpoint (or the admin key) may mint tokens, whatever the endpoint's auth mode.
    check_endpoint_access(dataplane.gateway.credentials, endpoint, "key", route.key_hashes, credential)
    return control.token(endpoint)


@router.get("/models", summary="Every model in the repository, with its state")
async def list_models(dataplane: Data, credential: Credential) -> list[dict[str, Any]]:
    dataplane.check_model_access(credential)
    statuses = sorted(dataplane.gateway.models.values(), key=lambda s: (s.info.name, s.info.version))
    return [status.as_dict() for status in statuses]


@router.get("/models/{model}", summary="One model's versions and their state")
async def get_model(model: str, dataplane: Data, credential: Credential) -> dict[str, Any]:
    dataplane.check_model_access(credential)
    dataplane.gateway.routes.model(model, None)  # 404 with the known names when unknown
    versions = [s.as_dict() for s in dataplane.gateway.models.values() if s.info.name == model]
    return {"name": model, "versions": sorted(versions, key=lambda v: v["version"])}


@router.get("/endpoints/{endpoint}/swagger.json", summary="OpenAPI document of an endpoint's scoring URL")
async def endpoint_swagger(
    endpoint: str, dataplane: Data, control: Control, credential: Credential, deployment: str | None = None
) -> dict[str, Any]:
    """Built from the serving deployment's inference-schema decorators, declared signature or sample
    request; `?deployment=` picks another deployment."""
    route = dataplane.gateway.routes.endpoint(endpoint)
    check_endpoint_access(dataplane.gateway.credentials, endpoint, route.auth_mode, route.key_hashes, credential)
    return control.openapi(endpoint, deployment)
