"""Every status each operation can answer, in the gateway's OpenAPI document.

FastAPI documents 200 and 422 only; the gateway answers 422 never (a bad request is 400 bad_input) and much
else besides. The statuses are listed here per router (its tag), from the error vocabulary in turnout/errors.py;
the listener's own refusals (408, 413, 431) can meet any operation.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                           "details": {"type": "object"}},
        },
        "request_id": {"type": "string"},
    },
}
# The Open Inference Protocol's own error shape.
V2_ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}

_WHY = {
    400: "bad_input: the request is malformed or not what the model accepts",
    401: "unauthorized: no credential, or one that is not valid here",
    403: "forbidden: a valid credential that does not open this",
    404: "not_found: no such endpoint, model, version, deployment or job",
    405: "method not allowed (the Allow header lists those that are)",
    408: "request_timeout: the headers or the body did not arrive in time",
    409: "conflict: exists already, or in the way of this change",
    413: "payload_too_large: the body is over --max-body-bytes",
    415: "unsupported_media_type",
    424: "deployment_failed: the deployment could not be made to serve",
    429: "overloaded: too many requests in flight (Retry-After)",
    431: "headers_too_large: the header block is over its bound",
    500: "script_failed or internal_error",
    502: "node_unreachable: the Triton node does not answer",
    503: "not_ready: loading, restarting or failed (Retry-After when waiting helps)",
    504: "timeout: the script or the node ran past its bound",
}
_LISTENER = (405, 408, 413, 431)
_SCORING = (400, 401, 403, 404, 415, 429, 500, 502, 503, 504)
BY_TAG: dict[str, tuple[int, ...]] = {
    "scoring": _SCORING,
    "open inference protocol": _SCORING,
    "control plane": (400, 401, 403, 404, 409, 415, 424, 500, 502, 503, 504),
    "system": (500, 503),
    "batch endpoints": (400, 401, 403, 404, 409, 415, 424, 500, 502, 503, 504),
    "batch jobs": (400, 401, 403, 404, 409, 500, 503),
}


def install(app: FastAPI) -> None:
    """Replace ``app.openapi`` with one that documents the error statuses (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description,
                                   routes=app.routes)
            for path, operations in document.get("paths", {}).items():
                for operation in operations.values():
                    _document(path, operation)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document(path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)  # validation failures answer 400
    schema = V2_ERROR_SCHEMA if path.startswith("/v2/") else ERROR_SCHEMA
    statuses = {status for tag in operation.get("tags", []) for status in BY_TAG.get(tag, ())}
    for status in sorted(statuses | set(_LISTENER)):
        responses.setdefault(str(status), {"description": _WHY[status],
                                           "content": {"application/json": {"schema": schema}}})
