"""Azure ML online scripts: ``init()`` + ``run(...)``, served as azureml-inference-server-http does.

``run()``'s signature is analysed once, when the script loads, into one of three input parsers:
  * plain ``run(raw_data)``: the request body as text;
  * ``@input_schema``-decorated ``run(**params)``: the JSON object's keys as keyword arguments
    (the decorator converts them to numpy/pandas/... itself);
  * ``@rawhttp run(request)``: a Flask ``AMLRequest`` built from the HTTP request.
``run(..., request_headers)`` also receives the request headers. The return value is serialised to JSON
unless it is an ``AMLResponse`` (any Flask/werkzeug response), whose status, headers and body are kept.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from turnout.errors import BadInput, ScriptLoadError, UnsupportedMediaType
from turnout.scoring import codec
from turnout.scoring.base import Scorer
from turnout.scoring.guard import call_user
from turnout.wire import ScoringRequest, ScoringResult

log = logging.getLogger("turnout.scoring")

# Modules whose ``rawhttp`` decorator flips a module-level flag (Azure's own mechanism).
_RAWHTTP_MODULES = ("azureml.contrib.services.aml_request", "azureml_inference_server_http.api.aml_request")

InputParser = Callable[[ScoringRequest], dict[str, Any]]


def _rawhttp_requested() -> bool:
    return any(getattr(sys.modules.get(name), "_rawHttpRequested", False) for name in _RAWHTTP_MODULES)


def _is_schema_decorated(fn: Callable[..., Any]) -> bool:
    try:
        from inference_schema.schema_util import is_schema_decorated
    except ImportError:
        return False
    return bool(is_schema_decorated(fn))


def _body_text(request: ScoringRequest) -> str:
    try:
        return request.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"the request body cannot be decoded as UTF-8: {exc}") from None


def _query_params(query: str) -> dict[str, Any]:
    """GET /score?a=1&b=[1,2]: each value parsed as JSON when it is JSON, repeated keys become lists."""
    from urllib.parse import parse_qs

    def parse(value: str) -> Any:
        try:
            return codec.loads(value.encode())
        except BadInput:
            return value

    parsed: dict[str, Any] = {}
    for key, values in parse_qs(query, keep_blank_values=True).items():
        parsed[key] = parse(values[0]) if len(values) == 1 else [parse(v) for v in values]
    return parsed


def _flask_request(request: ScoringRequest) -> Any:
    from azureml.contrib.services.aml_request import AMLRequest
    from werkzeug.test import EnvironBuilder

    meta = request.meta
    environ = EnvironBuilder(
        method=meta.method,
        path=meta.path,
        query_string=meta.query,
        headers=list(meta.headers.items()),
        data=request.body,
    ).get_environ()
    aml_request = AMLRequest.__new__(AMLRequest)
    super(AMLRequest, aml_request).__init__(environ)  # AMLRequest.__init__ takes no environ
    return aml_request


class _JsonStringInput:
    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, request: ScoringRequest) -> dict[str, Any]:
        if request.meta.method == "GET":
            return {self.name: codec.dumps(_query_params(request.meta.query)).decode()}
        return {self.name: _body_text(request)}


class _ObjectInput:
    def __init__(self, parameters: list[inspect.Parameter]) -> None:
        self.parameters = parameters

    def __call__(self, request: ScoringRequest) -> dict[str, Any]:
        if request.meta.method == "GET":
            body = _query_params(request.meta.query)
        else:
            if not request.meta.is_json:
                raise UnsupportedMediaType(
                    f"this model expects Content-Type application/json, got {request.meta.content_type!r}"
                )
            body = codec.loads(request.body)
            if not isinstance(body, dict):
                raise BadInput(f"the request body should be a JSON object, got {type(body).__name__}")
        values: dict[str, Any] = {}
        for parameter in self.parameters:
            value = body.get(parameter.name, parameter.default)
            if value is inspect.Parameter.empty:
                raise BadInput(f"a value is not provided for the {parameter.name!r} parameter")
            values[parameter.name] = value
        return values


class _RawRequestInput:
    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, request: ScoringRequest) -> dict[str, Any]:
        return {self.name: _flask_request(request)}


def _to_result(output: Any) -> ScoringResult:
    from werkzeug.wrappers import Response

    if isinstance(output, Response):
        headers = {k: v for k, v in output.headers.items() if k.lower() not in ("content-type", "content-length")}
        if output.status_code >= 500:
            headers["x-ms-run-function-failed"] = "True"
        else:
            headers.pop("x-ms-run-function-failed", None)
        return ScoringResult(
            body=output.get_data(),
            status=output.status_code,
            content_type=output.headers.get("Content-Type", "application/octet-stream"),
            headers=headers,
        )
    return ScoringResult(body=codec.dumps(output))


class AzureOnlineScorer(Scorer):
    mode = "azure-online"

    def __init__(self, module: ModuleType, script: str, timeout: float) -> None:
        super().__init__(module, script, timeout)
        run = module.run
        # A driver module forwards to the real script; call the real run() as Azure does.
        driver = getattr(module, "driver_module", None)
        if isinstance(driver, ModuleType) and hasattr(driver, "run"):
            run = driver.run
        self._run = run
        self._parse, self._wants_headers, self.input_style = self._analyse(run)

    def _analyse(self, run: Callable[..., Any]) -> tuple[InputParser, bool, str]:
        params = list(inspect.signature(run).parameters.values())
        if any(p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
            raise ScriptLoadError(f"{self.script}: run() cannot accept positional-only arguments, *args or **kwargs")
        wants_headers = any(p.name == "request_headers" for p in params)
        params = [p for p in params if p.name != "request_headers"]
        if not params:
            raise ScriptLoadError(f"{self.script}: run() needs to accept an argument for the input data")
        raw, decorated = _rawhttp_requested(), _is_schema_decorated(run)
        if raw and decorated:
            raise ScriptLoadError(f"{self.script}: run() cannot be decorated with both @rawhttp and @input_schema")
        if raw:
            return _RawRequestInput(params[0].name), wants_headers, "rawhttp"
        if decorated:
            return _ObjectInput(params), wants_headers, "input_schema"
        return _JsonStringInput(params[0].name), wants_headers, "raw_data"

    def describe(self) -> str:
        return f"{self.mode} (run() takes {self.input_style})"

    def _score_one(self, request: ScoringRequest) -> ScoringResult:
        kwargs = self._parse(request)
        if self._wants_headers:
            kwargs["request_headers"] = dict(request.meta.headers)
        output = call_user(self._run, timeout=self.timeout, what=f"run() in {self.script}", **kwargs)
        return _to_result(output)
