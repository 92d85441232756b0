"""Scoring URLs: a stable one per endpoint and one per model (and model version)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from gateway.auth import check_endpoint_access
from gateway.rest.deps import Control, Credential, Data, Runtime, read_body, request_id
from gateway.rest.fastpath import ScoreTarget, score
from turnout.errors import BadInput

router = APIRouter(tags=["scoring"])


async def _answer(request: Request, dataplane: Data, target: ScoreTarget) -> Response:
    body = await read_body(request, dataplane.settings.max_body_bytes)
    status, headers, payload = await score(
        dataplane, target, request.method, request.url.query, request.headers, body, request_id(request)
    )
    return Response(payload, status_code=status, headers=headers)


# POSTs to these URLs are answered by rest/fastpath.py before they reach FastAPI; the routes document
# them, serve GET (as Azure does), and answer the same way through the same score().
@router.post("/endpoints/{endpoint}/score", summary="Score on an endpoint")
@router.get("/endpoints/{endpoint}/score", summary="Score on an endpoint (GET, as Azure allows)")
async def score_endpoint(endpoint: str, request: Request, dataplane: Data) -> Response:
    """The stable scoring URL. The deployment is picked by traffic weight unless the
    `azureml-model-deployment` header pins one; the response names the deployment that served."""
    return await _answer(request, dataplane, ScoreTarget("endpoint", endpoint))


@router.post("/models/{model}/score", summary="Score on a model's latest version")
@router.get("/models/{model}/score", summary="Score on a model's latest version (GET)")
async def score_model(model: str, request: Request, dataplane: Data) -> Response:
    return await _answer(request, dataplane, ScoreTarget("model", model))


@router.post("/models/{model}/versions/{version}/score", summary="Score on one version of a model")
@router.get("/models/{model}/versions/{version}/score", summary="Score on one version of a model (GET)")
async def score_model_version(model: str, version: int, request: Request, dataplane: Data) -> Response:
    return await _answer(request, dataplane, ScoreTarget("model", model, version))


@router.post("/endpoints/{endpoint}/token", summary="Renew an aml_token endpoint's token")
async def endpoint_token(endpoint: str, dataplane: Data, control: Control, credential: Credential) -> dict[str, Any]:
    """A holder of a valid token (or the admin key) gets a fresh one, as `get-credentials` gives."""
    route = dataplane.routes.current.endpoint(endpoint)
    if route.auth_mode != "aml_token":
        raise BadInput(f"endpoint {endpoint!r} uses auth_mode {route.auth_mode}: "
                       + ("send 'Authorization: Bearer <key>'; tokens are for aml_token endpoints"
                          if route.auth_mode == "key" else "it needs no credential"))
    check_endpoint_access(dataplane.credentials, endpoint, "aml_token", (), credential, route.identity)
    return control.token(endpoint)


@router.get("/models", summary="Every model in the repository, with its state")
async def list_models(dataplane: Data, services: Runtime, credential: Credential) -> list[dict[str, Any]]:
    dataplane.check_model_access(credential)
    models = sorted(services.models.all(), key=lambda m: (m.info.name, m.info.version))
    return [model.as_dict() for model in models]


@router.get("/models/{model}", summary="One model's versions and their state")
async def get_model(model: str, dataplane: Data, services: Runtime, credential: Credential) -> dict[str, Any]:
    dataplane.check_model_access(credential)
    dataplane.routes.current.model(model, None)  # 404 with the known names when unknown
    versions = [m.as_dict() for m in services.models.all() if m.info.name == model]
    return {"name": model, "versions": sorted(versions, key=lambda v: v["version"])}


@router.get("/endpoints/{endpoint}/swagger.json", summary="OpenAPI document of an endpoint's scoring URL")
async def endpoint_swagger(
    endpoint: str, dataplane: Data, control: Control, credential: Credential, deployment: str | None = None
) -> dict[str, Any]:
    """Built from the serving deployment's inference-schema decorators, declared signature or sample
    request; `?deployment=` picks another deployment."""
    dataplane.endpoint_route(endpoint, credential)
    return control.openapi(endpoint, deployment)
