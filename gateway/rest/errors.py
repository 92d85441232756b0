"""One exception handler per kind of failure, all answering in Turnout's error vocabulary."""

from __future__ import annotations

import logging
from http import HTTPStatus

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from gateway.rest.deps import JSONBody, request_id
from turnout.errors import BadInput, NotReady, Overloaded, TurnoutError

log = logging.getLogger("turnout.gateway.http")


def render_error(exc: TurnoutError, request_id: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and JSON body for an error: the one renderer of every HTTP path."""
    headers = {"content-type": "application/json", **exc.headers}
    if isinstance(exc, (Overloaded, NotReady)) and exc.retry_after is not None:
        headers["retry-after"] = str(exc.retry_after)
    if exc.code == "script_failed":
        # The script's own message can leak internals: the caller gets a generic one, the log the rest.
        log.warning("request %s: %s", request_id, exc.message)
        headers["x-ms-run-function-failed"] = "True"
        named = exc.headers
        exc = type(exc)("the scoring script failed; see the deployment's logs")
        exc.headers = named
    if path.startswith("/v2/"):
        body = orjson.dumps({"error": exc.message})  # the Open Inference Protocol's shape (tritonclient)
    else:
        body = orjson.dumps(exc.to_dict(request_id))
    return int(exc.status), headers, body


def error_response(request: Request, exc: TurnoutError) -> Response:
    status, headers, body = render_error(exc, request_id(request), request.url.path)
    return Response(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(TurnoutError)
    async def turnout_error(request: Request, exc: TurnoutError) -> Response:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return error_response(request, BadInput(f"invalid request: {problems}"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONBody:
        error = TurnoutError(str(exc.detail))
        body = error.to_dict(request_id(request))
        body["error"]["code"] = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        return JSONBody(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("request %s failed unexpectedly", request_id(request))
        return error_response(request, TurnoutError("internal error"))
