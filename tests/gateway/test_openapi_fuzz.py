"""schemathesis over the gateway's own OpenAPI document: the real app and listener on a loopback port, fake
nodes behind it; a fixed number of examples per operation. No 5xx for what a client sends, every status
documented, content types as documented, 405 with Allow."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from gateway import http_server
from gateway.app import create_app
from tests.gateway.fakes import FakeProvider, settings_for
from turnout.triton.embedded import free_port

EXAMPLES_PER_OPERATION = 25
CHECKS = (checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_headers_conformance, checks.allow_header_conformance)


class Served:
    url = ""
    admin: dict[str, str] = {}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("fuzzed")
    gateway_settings = settings_for(root, port=free_port())
    app = create_app(gateway_settings, FakeProvider())
    server = uvicorn.Server(http_server.config(app, gateway_settings, log_level="error", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    Served.url = f"http://127.0.0.1:{gateway_settings.port}"
    Served.admin = {"Authorization": f"Bearer {app.state.services.credentials.admin_key}"}
    try:
        yield Served()
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _fuzzer(operation: Any, gateway: Served, failures: list[str], calls: list[str]) -> Callable[[], None]:
    label = operation.label

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case: schemathesis.Case) -> None:
        calls.append(label)
        response = case.call(base_url=gateway.url, headers=gateway.admin, timeout=10)
        try:
            case.validate_response(response, checks=CHECKS)
        except BaseException as exc:  # collected: one report for every operation (FailureGroup is a group)
            found = "; ".join(getattr(e, "title", str(e)) for e in getattr(exc, "exceptions", [exc]))
            failures.append(f"{label}: {found} -> {response.status_code} {response.text[:160]!r}")
            raise

    return fuzz  # type: ignore[no-any-return]


def test_every_operation_answers_as_documented(gateway: Served) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    failures: list[str] = []
    calls: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operations += 1
        before = len(failures)
        try:
            _fuzzer(result.ok(), gateway, failures, calls)()
        except BaseException:
            if len(failures) == before:  # not a failure of the API: of the test itself
                raise
    assert operations >= 30 and len(set(calls)) == operations, (operations, len(set(calls)))
    assert len(calls) >= operations * 5, len(calls)
    assert not failures, "\n".join(dict.fromkeys(failures))


def test_the_document_lists_error_statuses_and_never_422(gateway: Served) -> None:
    document = httpx.get(f"{gateway.url}/openapi.json").json()
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]["responses"]
    assert {"400", "401", "404", "429", "503", "504"} <= set(infer)
    assert not any("422" in op.get("responses", {}) for ops in document["paths"].values() for op in ops.values())
