"""One exception handler per kind of failure, all answering in Turnout's error vocabulary."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from gateway.rest.deps import JSONBody, request_id
from turnout.errors import BadInput, NotReady, Overloaded, TurnoutError

log = logging.getLogger("turnout.gateway.http")


def error_response(request: Request, exc: TurnoutError) -> JSONBody:
    headers = {}
    if isinstance(exc, (Overloaded, NotReady)):
        headers["Retry-After"] = str(exc.retry_after)
    if exc.status >= 500 and exc.code == "script_failed":
        headers["x-ms-run-function-failed"] = "True"
    if request.url.path.startswith("/v2/"):
        # The Open Inference Protocol's error shape, which tritonclient parses.
        return JSONBody({"error": exc.message}, status_code=int(exc.status), headers=headers)
    return JSONBody(exc.to_dict(request_id(request)), status_code=int(exc.status), headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(TurnoutError)
    async def turnout_error(request: Request, exc: TurnoutError) -> JSONBody:
        if exc.code == "script_failed":
            # The script's own message can leak internals: the caller gets a generic one, the log the rest.
            log.warning("request %s: %s", request_id(request), exc.message)
            exc = type(exc)("the scoring script failed; see the deployment's logs")
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONBody:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return error_response(request, BadInput(f"invalid request: {problems}"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONBody:
        error = TurnoutError(str(exc.detail))
        body = error.to_dict(request_id(request))
        body["error"]["code"] = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        return JSONBody(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONBody:
        log.exception("request %s failed unexpectedly", request_id(request))
        return error_response(request, TurnoutError("internal error"))
