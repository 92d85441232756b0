"""Every model in the repository has its own URL; the listing shows states and reasons."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from tests.gateway.conftest import GatewayProcess

pytestmark = pytest.mark.integration


def test_models_are_listed_with_state_and_reason(gateway: GatewayProcess) -> None:
    models = httpx.get(f"{gateway.url}/models", headers=gateway.admin).json()
    states = {m["name"]: m["state"] for m in models}
    assert states == {"torch-mlp": "ready", "onnx-classifier": "ready", "schema-azure": "ready",
                      "my-endpoint-blue": "ready", "init_raises": "failed"}
    broken = next(m for m in models if m["name"] == "init_raises")
    assert "init() failed: RuntimeError: boom in init" in broken["reason"]


@pytest.mark.parametrize(("model", "sample"), [
    ("torch-mlp", "torch-mlp/sample-request.json"),
    ("onnx-classifier", "onnx-classifier/sample-request.json"),
    ("schema-azure", "schema-azure/sample-request.json"),
    ("my-endpoint-blue", "sklearn-azure/sample-request.json"),
])
def test_every_model_has_its_own_url(gateway: GatewayProcess, examples_ready: Path, model: str, sample: str) -> None:
    body = (examples_ready / sample).read_bytes()
    for path in (f"/models/{model}/score", f"/models/{model}/versions/1/score"):
        response = httpx.post(gateway.url + path, content=body, headers=gateway.admin)
        assert response.status_code == 200, response.text
        assert response.headers["x-turnout-model-version"] == "1"
        assert response.headers["x-request-id"]
        assert json.loads(response.content)


def test_model_url_errors(gateway: GatewayProcess) -> None:
    post = lambda path, **kw: httpx.post(gateway.url + path, **kw)  # noqa: E731
    assert post("/models/torch-mlp/score", content=b"{}").status_code == 401
    unknown = post("/models/nope/score", content=b"{}", headers={**gateway.admin, "x-request-id": "req-42"})
    assert unknown.status_code == 404
    assert unknown.json() == {"error": {"code": "not_found", "message": "no model named 'nope' in the repository"},
                              "request_id": "req-42"}
    assert unknown.headers["x-request-id"] == "req-42"
    assert post("/models/torch-mlp/versions/9/score", content=b"{}", headers=gateway.admin).status_code == 404
    failed = post("/models/init_raises/score", content=b"{}", headers=gateway.admin)
    assert failed.status_code == 503 and "failed" in failed.json()["error"]["message"]
    assert failed.headers["retry-after"]
    malformed = post("/models/torch-mlp/score", content=b'{"data": [[1', headers=gateway.admin)
    assert malformed.status_code == 400 and "not valid JSON" in malformed.json()["error"]["message"]
    too_big = post("/models/torch-mlp/score", content=b"x" * 200_000, headers=gateway.admin)
    assert too_big.status_code == 413
    schema = post("/models/schema-azure/score", content=b"a=1",
                  headers={**gateway.admin, "Content-Type": "text/plain"})
    assert schema.status_code == 415


def test_tritonclient_http_and_grpc_through_the_gateway(gateway: GatewayProcess, examples_ready: Path) -> None:
    body = (examples_ready / "onnx-classifier" / "sample-request.json").read_bytes()
    data = np.array([[body]], dtype=np.object_)
    http_client = triton_http.InferenceServerClient(f"127.0.0.1:{gateway.port}")
    try:
        tensor = triton_http.InferInput("BODY", [1, 1], "BYTES")
        tensor.set_data_from_numpy(data)
        result = http_client.infer("onnx-classifier", [tensor], headers=gateway.admin)
        assert json.loads(result.as_numpy("BODY")[0][0])[0]["label"] == "setosa"
        # Answers name the model as the caller did, with its version, never the internal entry.
        assert (result.get_response()["model_name"], result.get_response()["model_version"]) == ("onnx-classifier", "1")
        wrong = triton_http.InferInput("NOPE", [1, 1], "BYTES")
        wrong.set_data_from_numpy(data)
        with pytest.raises(Exception) as refused:
            http_client.infer("onnx-classifier", [wrong], headers=gateway.admin)
        assert "onnx-classifier-v1" not in str(refused.value) and "onnx-classifier" in str(refused.value)
        assert "inputs are BODY" in str(refused.value) and "/models/onnx-classifier/score" in str(refused.value)
        assert http_client.is_model_ready("onnx-classifier", headers=gateway.admin)
        assert http_client.get_model_metadata("onnx-classifier", headers=gateway.admin)["name"] == "onnx-classifier"
    finally:
        http_client.close()
    grpc_client = triton_grpc.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}")
    try:
        tensor = triton_grpc.InferInput("BODY", [1, 1], "BYTES")
        tensor.set_data_from_numpy(data)
        auth = {"authorization": gateway.admin["Authorization"]}
        result = grpc_client.infer("onnx-classifier", [tensor], headers=auth)
        assert json.loads(result.as_numpy("BODY")[0][0])[0]["label"] == "setosa"
        assert result.get_response().model_name == "onnx-classifier"
        assert result.get_response().model_version == "1"
        with pytest.raises(Exception, match="UNAUTHENTICATED"):
            grpc_client.infer("onnx-classifier", [tensor])
        with pytest.raises(Exception, match="UNIMPLEMENTED.*control plane"):
            grpc_client.get_model_repository_index(headers=auth)
    finally:
        grpc_client.close()


def test_concurrent_callers_share_triton_requests_and_keep_their_own_answers(gateway: GatewayProcess) -> None:
    """Coalescing end to end: 48 callers at once, each gets the answer its input gets alone (one bad
    input among them gets its own 400), and fewer Triton requests than callers reached the node."""
    rng = np.random.default_rng(7)
    bodies = [json.dumps({"data": rng.normal(size=(1 + i % 3, 16)).round(3).tolist()}).encode() for i in range(48)]
    bodies[17] = b'{"data": [[1, 2]]}'  # wrong width: BadInput in preprocess
    url = f"{gateway.url}/models/torch-mlp/score"
    alone = [httpx.post(url, content=b, headers=gateway.admin) for b in bodies]

    def batch_counts() -> tuple[float, float]:
        metrics = httpx.get(f"{gateway.url}/metrics").text
        pick = lambda suffix: sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()  # noqa: E731
                                  if line.startswith(f"turnout_upstream_batch_size_{suffix}{{") and "torch-mlp" in line)
        return pick("count"), pick("sum")

    before = batch_counts()

    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64), timeout=30) as client:
            return await asyncio.gather(*(
                client.post(url, content=b, headers={**gateway.admin, "x-request-id": f"r{i}"})
                for i, b in enumerate(bodies)
            ))

    answers = asyncio.run(together())
    after = batch_counts()
    for i, (single, shared) in enumerate(zip(alone, answers, strict=True)):
        assert shared.status_code == single.status_code == (400 if i == 17 else 200), (i, shared.text)
        assert shared.headers["x-request-id"] == f"r{i}"
        if i != 17:
            assert np.allclose(shared.json()["probabilities"], single.json()["probabilities"], atol=1e-5)
    assert "expected rows of 16 numbers" in answers[17].json()["error"]["message"]
    triton_requests, callers = after[0] - before[0], after[1] - before[1]
    assert callers == 48 and triton_requests < callers, (triton_requests, callers)


def test_health_and_metrics(gateway: GatewayProcess) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json()["status"] == "ok"
    assert httpx.get(f"{gateway.url}/readyz").json()["nodes"] == {"embedded": True}
    httpx.post(f"{gateway.url}/models/schema-azure/score", content=b'{"data": [[1, 2, 3]]}', headers=gateway.admin)
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert 'turnout_requests_total{code="200",deployment="1",kind="model",target="schema-azure"}' in metrics
    assert 'turnout_node_up{node="embedded",pool="cpu"} 1.0' in metrics


def test_client_mistakes_on_v2_and_grpc_are_client_errors(gateway: GatewayProcess) -> None:
    """Triton answers 500 to a body it cannot parse; the gateway answers 400 (and INVALID_ARGUMENT)."""
    url = f"{gateway.url}/v2/models/schema-azure/infer"
    for body in (b"{bad", b'{"inputs": "x"}', b"[]",
                 b'{"inputs": [{"name": "BODY", "shape": [-1], "datatype": "BYTES", "data": ["x"]}]}'):
        answer = httpx.post(url, content=body, headers=gateway.admin)
        assert answer.status_code == 400, (body, answer.text)
        assert "error" in answer.json()
    ready = httpx.get(f"{gateway.url}/v2/health/ready")
    assert ready.headers["content-type"] == "application/json" and ready.json() == {"ready": True}
    grpc_client = triton_grpc.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}")
    try:
        tensor = triton_grpc.InferInput("BODY", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[b"{}"]], dtype=np.object_))
        auth = {"authorization": gateway.admin["Authorization"]}
        with pytest.raises(Exception, match="INVALID_ARGUMENT.*model_version must be a version number"):
            grpc_client.infer("schema-azure", [tensor], model_version="abc", headers=auth)
    finally:
        grpc_client.close()


def test_each_models_memory_is_measured_on_the_embedded_node(gateway: GatewayProcess) -> None:
    """The stubs' proportional set size, per entry, read from /proc by the health loop (every 5 s here)."""
    deadline = time.monotonic() + 20
    measured: dict[str, int] = {}
    while time.monotonic() < deadline:
        models = httpx.get(f"{gateway.url}/models", headers=gateway.admin).json()
        measured = {m["name"]: m["memory_bytes"] for m in models if m["state"] == "ready" and m.get("memory_bytes")}
        if {"torch-mlp", "schema-azure"} <= set(measured):
            break
        time.sleep(0.5)
    assert measured.get("torch-mlp", 0) > 50 * 1024**2, measured  # torch in the stub: ~230 MB RSS
    assert 5 * 1024**2 < measured.get("schema-azure", 0) < measured["torch-mlp"], measured
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert 'turnout_entry_memory_bytes{entry="torch-mlp-v1",node="embedded"}' in metrics
    print({name: f"{size / 1024**2:.0f} MiB" for name, size in measured.items()})
