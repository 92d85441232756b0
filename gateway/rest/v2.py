"""The Open Inference Protocol (KServe v2) over REST. ``{name}`` is an endpoint (routed by its traffic
weights; the ``azureml-model-deployment`` header pins a deployment) or a model. Bodies pass through to
Triton untouched, binary tensor extension included, so tritonclient works against the gateway."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from gateway.dataplane import Resolved
from gateway.rest.deps import Credential, Data, Runtime, read_body
from gateway.routing import DEPLOYMENT_HEADER
from turnout.wire import HEADER_LENGTH

router = APIRouter(prefix="/v2", tags=["open inference protocol"])
_PASSED_REQUEST = ("content-type", "content-encoding", HEADER_LENGTH.lower())
_PASSED_RESPONSE = ("content-type", "content-encoding", HEADER_LENGTH.lower())
# Triton answers 500 to a request it cannot parse; these are the caller's mistakes (400).
_TRITON_PARSE_FAILURES = (b"failed to parse", b"unable to parse", b"attempt to access", b"invalid json")


def _resolve(dataplane: Data, name: str, version: int | None, request: Request, credential: str | None) -> Resolved:
    if name in dataplane.routes.current.endpoints:
        return dataplane.resolve_endpoint(name, request.headers.get(DEPLOYMENT_HEADER), credential)
    return dataplane.resolve_model(name, version, credential, v2=True)


async def _forward(dataplane: Data, name: str, version: int | None, request: Request, credential: str | None,
                   suffix: str) -> Response:
    body = await read_body(request, dataplane.settings.max_body_bytes) if request.method == "POST" else b""
    resolved = _resolve(dataplane, name, version, request, credential)  # after the body: see rest/scoring.py
    headers = {k: v for k, v in request.headers.items() if k in _PASSED_REQUEST}
    status, upstream_headers, data = await dataplane.forward(resolved, request.method, suffix, body, headers)
    passed = {k.lower(): v for k, v in upstream_headers.items() if k.lower() in _PASSED_RESPONSE}
    if resolved.kind == "endpoint":
        passed[DEPLOYMENT_HEADER] = resolved.deployment
    version_text = resolved.deployment if resolved.kind == "model" else None
    if status == 200 and suffix in ("", "/infer"):
        data = _as_called(data, passed, name, version_text, "name" if suffix == "" else "model_name")
    elif status >= 400:  # Triton's message names its entry: name what the caller called
        data = data.replace(resolved.target.entry.encode(), name.encode())
        if status == 500 and any(marker in data.lower() for marker in _TRITON_PARSE_FAILURES):
            status = 400
        if status == 400 and b"unexpected inference input" in data and resolved.served.kind == "python_scoring":
            url = f"/{'endpoints' if resolved.kind == 'endpoint' else 'models'}/{name}/score"
            told = orjson.loads(data).get("error", "")
            data = orjson.dumps({"error": f"{told}: {name!r} is served by a scoring script, whose inputs are BODY "
                                          f"(BYTES [1, 1], the request body) and optional META; or POST the body "
                                          f"itself to {url}"})
    return Response(data, status_code=status, headers=passed)


def _as_called(data: bytes, headers: dict[str, str], name: str, version: str | None, key: str) -> bytes:
    """Triton's answer, naming the model as the caller did (and its version), never the internal entry.
    With the binary tensor extension only the JSON header before the tensors is rewritten."""
    length = headers.get(HEADER_LENGTH.lower())
    split = int(length) if length and length.isdigit() else len(data)
    document = orjson.loads(data[:split])
    document[key] = name
    if version is not None and key == "model_name":
        document["model_version"] = version
    header = orjson.dumps(document)
    if length is not None:
        headers[HEADER_LENGTH.lower()] = str(len(header))
    return header + data[split:]


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return {"name": "turnout", "version": "0.1.0", "extensions": ["binary_tensor_data"]}


@router.get("/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
async def ready(services: Runtime) -> Response:
    return Response(orjson.dumps({"ready": services.ready}), status_code=200 if services.ready else 503,
                    media_type="application/json")


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def model_metadata(name: str, request: Request, dataplane: Data, credential: Credential,
                         version: int | None = None) -> Response:
    return await _forward(dataplane, name, version, request, credential, "")


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
async def model_ready(name: str, request: Request, dataplane: Data, credential: Credential,
                      version: int | None = None) -> Response:
    return await _forward(dataplane, name, version, request, credential, "/ready")


@router.post("/models/{name}/infer")
@router.post("/models/{name}/versions/{version}/infer")
async def infer(name: str, request: Request, dataplane: Data, credential: Credential,
                version: int | None = None) -> Response:
    return await _forward(dataplane, name, version, request, credential, "/infer")
