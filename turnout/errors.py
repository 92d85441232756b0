"""One error vocabulary, from the scoring backend to the gateway.

Every error Turnout raises on purpose is a :class:`TurnoutError` carrying its HTTP status. The backend
ships it to the gateway inside Triton's error message (:meth:`TurnoutError.to_wire`), the gateway turns it
back into the same class (:func:`from_wire`) and answers with the same status. Nothing here imports a web
framework or Triton, so every layer can use it.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, ClassVar

# Marks a Triton error message that carries a serialised TurnoutError, so the gateway can tell ours from
# Triton's own ("Stub process ... is not healthy", "unknown model").
WIRE_PREFIX = "turnout-error:"


class TurnoutError(Exception):
    """Base of every deliberate Turnout error. ``status`` is the HTTP status it answers with."""

    status: ClassVar[HTTPStatus] = HTTPStatus.INTERNAL_SERVER_ERROR
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers: dict[str, str] = {}  # extra response headers (the deployment that answered)

    def with_header(self, name: str, value: str) -> TurnoutError:
        self.headers = {**self.headers, name: value}
        return self

    def to_dict(self, request_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"error": {"code": self.code, "message": self.message}}
        if self.details:
            body["error"]["details"] = self.details
        if request_id:
            body["request_id"] = request_id
        return body

    def to_wire(self) -> str:
        payload = {"code": self.code, "status": int(self.status), "message": self.message}
        if self.details:
            payload["details"] = self.details
        return WIRE_PREFIX + json.dumps(payload)


class BadInput(TurnoutError):
    """The request is malformed or not what the model accepts. Scoring scripts may raise it too."""

    status = HTTPStatus.BAD_REQUEST
    code = "bad_input"


class Unauthorized(TurnoutError):
    status = HTTPStatus.UNAUTHORIZED
    code = "unauthorized"


class Forbidden(TurnoutError):
    status = HTTPStatus.FORBIDDEN
    code = "forbidden"


class NotFound(TurnoutError):
    status = HTTPStatus.NOT_FOUND
    code = "not_found"


class Conflict(TurnoutError):
    status = HTTPStatus.CONFLICT
    code = "conflict"


class PayloadTooLarge(TurnoutError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    code = "payload_too_large"


class HeadersTooLarge(TurnoutError):
    """The request's header block is larger, or has more fields, than the gateway accepts."""

    status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    code = "headers_too_large"


class RequestTimeout(TurnoutError):
    """The client did not send its request's headers or body in time."""

    status = HTTPStatus.REQUEST_TIMEOUT
    code = "request_timeout"


class UnsupportedMediaType(TurnoutError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_media_type"


class ScriptFailed(TurnoutError):
    """The user's scoring script raised or returned something unusable. Its traceback goes to the logs only."""

    status = HTTPStatus.INTERNAL_SERVER_ERROR
    code = "script_failed"


class Overloaded(TurnoutError):
    status = HTTPStatus.TOO_MANY_REQUESTS
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: int | None = 1, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class NodeUnreachable(TurnoutError):
    status = HTTPStatus.BAD_GATEWAY
    code = "node_unreachable"


class NotReady(TurnoutError):
    """Not ready now; ``retry_after`` None when waiting will not help (a deployment that failed to load)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "not_ready"

    def __init__(self, message: str, *, retry_after: int | None = 1, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class ScoringTimeout(TurnoutError):
    status = HTTPStatus.GATEWAY_TIMEOUT
    code = "timeout"


class PackageError(TurnoutError):
    """A model package, manifest or deployment file is invalid. Raised by the packager and the loader."""

    status = HTTPStatus.BAD_REQUEST
    code = "invalid_package"


class DeploymentFailed(TurnoutError):
    """A deployment could not be made to serve (its script failed to load, no node in its pool)."""

    status = HTTPStatus.FAILED_DEPENDENCY
    code = "deployment_failed"


class ScriptLoadError(TurnoutError):
    """The scoring script could not be imported or initialised; the entry cannot serve."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "script_load_failed"


BY_CODE: dict[str, type[TurnoutError]] = {
    cls.code: cls
    for cls in (
        TurnoutError, BadInput, Unauthorized, Forbidden, NotFound, Conflict, PayloadTooLarge, HeadersTooLarge,
        RequestTimeout,
        UnsupportedMediaType, ScriptFailed, Overloaded, NodeUnreachable, NotReady, ScoringTimeout,
        PackageError, ScriptLoadError, DeploymentFailed,
    )
}


def from_wire(message: str) -> TurnoutError | None:
    """Rebuild a TurnoutError from a Triton error message, or None if the message is not ours."""
    start = message.find(WIRE_PREFIX)
    if start < 0:
        return None
    try:
        payload = json.loads(message[start + len(WIRE_PREFIX):])
        cls = BY_CODE.get(payload["code"], TurnoutError)
        return cls(str(payload["message"]), details=payload.get("details"))
    except (ValueError, KeyError, TypeError):
        return None


# Triton's per-request error codes (pb_utils.TritonError) that come closest to each status; Triton maps
# them to HTTP 400/404/503/500 for clients that call it directly. The exact status travels in the message.
TRITON_CODE_FOR_STATUS: dict[int, str] = {
    400: "INVALID_ARG",
    404: "NOT_FOUND",
    413: "INVALID_ARG",
    415: "INVALID_ARG",
    503: "UNAVAILABLE",
}


# gRPC status codes (grpc.StatusCode names) for each HTTP status, for the gateway's gRPC transport.
GRPC_CODE_FOR_STATUS: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "FAILED_PRECONDITION",
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT",
    424: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
