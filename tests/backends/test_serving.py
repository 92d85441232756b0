"""The python_scoring backend on the real Triton: every example, the Azure script styles, hooks and
dynamic batching, batch scripts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc.aio as grpc_aio
from tritonclient.grpc import InferInput

from tests.conftest import Serving
from turnout.errors import BadInput, UnsupportedMediaType
from turnout.wire import RequestMeta, ScoringResult

pytestmark = pytest.mark.integration


def sample(folder: Path) -> bytes:
    for candidate in (folder / "sample-request.json", folder / "onlinescoring" / "sample-request.json"):
        if candidate.exists():
            return candidate.read_bytes()
    raise FileNotFoundError(folder)


@pytest.mark.parametrize(
    ("source", "check"),
    [
        ("sklearn-azure/blue-deployment.yml", lambda out: len(out) == 2 and abs(out[0] - 385) < 5),
        ("torch-mlp", lambda out: len(out["labels"]) == 2 and len(out["probabilities"][0]) == 3),
        ("onnx-classifier", lambda out: [o["label"] for o in out] == ["setosa", "setosa"]),
        ("keras-regressor", lambda out: abs(out["predictions"][0] - 3.0) < 0.5),
        ("schema-azure", lambda out: out == {"predictions": [13.0, -1.0]}),
    ],
)
def test_every_example_serves(serving: Serving, examples_ready: Path, source: str, check) -> None:  # type: ignore[no-untyped-def]
    entry = serving.deploy(examples_ready / source)
    folder = (examples_ready / source).parent if source.endswith(".yml") else examples_ready / source
    result = serving.client.score(entry, sample(folder))
    assert result.status == 200, result.body
    assert check(json.loads(result.body)), result.body


def test_example_rejects_bad_input_with_400(serving: Serving, examples_ready: Path) -> None:
    entry = serving.deploy(examples_ready / "torch-mlp")
    with pytest.raises(BadInput, match="expected rows of 16 numbers"):
        serving.client.score(entry, b'{"data": [[1, 2]]}')
    with pytest.raises(BadInput, match="not valid JSON"):
        serving.client.score(entry, b'{"data": [[1, 2]')


def test_azure_model_dir_layout_and_environment(serving: Serving, make_package) -> None:  # type: ignore[no-untyped-def]
    folder = make_package(
        """
        import os

        def init():
            global seen
            root = os.environ["AZUREML_MODEL_DIR"]
            seen = {
                "listing": sorted(os.listdir(root)),
                "weights": open(os.path.join(root, "model", "weights.txt")).read(),
                "cwd_has_script": os.path.exists("score.py"),
                "custom": os.environ["CUSTOM_SETTING"],
                "omp": os.environ["OMP_NUM_THREADS"],
            }

        def run(raw_data):
            return seen
        """,
        model_yaml={"environment_variables": {"CUSTOM_SETTING": "on"}, "threads": 1},
        files={"model/weights.txt": "42"},
    )
    entry = serving.deploy(folder)
    seen = json.loads(serving.client.score(entry, b"{}").body)
    assert seen == {"listing": ["model"], "weights": "42", "cwd_has_script": True, "custom": "on", "omp": "1"}


def test_azure_rawhttp_request_and_response(serving: Serving, make_package) -> None:  # type: ignore[no-untyped-def]
    folder = make_package(
        """
        from azureml.contrib.services.aml_request import AMLRequest, rawhttp
        from azureml.contrib.services.aml_response import AMLResponse

        def init():
            pass

        @rawhttp
        def run(request):
            if request.method == "GET":
                return AMLResponse({"query": request.args.get("q")}, 200, json_str=True)
            if request.headers.get("X-Teapot"):
                return AMLResponse("short and stout", 418, {"X-Brewed": "yes"})
            return AMLResponse(request.get_data()[::-1], 201, {"Content-Type": "application/octet-stream"})
        """
    )
    entry = serving.deploy(folder)
    created = serving.client.score(entry, b"abc", RequestMeta(headers={"Content-Type": "text/plain"}))
    assert (created.status, created.body, created.content_type) == (201, b"cba", "application/octet-stream")
    teapot = serving.client.score(entry, b"{}", RequestMeta(headers={"X-Teapot": "1"}))
    assert (teapot.status, teapot.body, teapot.headers.get("X-Brewed")) == (418, b"short and stout", "yes")
    got = serving.client.score(entry, b"", RequestMeta(method="GET", query="q=tea"))
    assert json.loads(got.body) == {"query": "tea"}


def test_azure_request_headers_and_schema_errors(serving: Serving, examples_ready: Path, make_package) -> None:  # type: ignore[no-untyped-def]
    folder = make_package(
        """
        def init():
            pass

        def run(data, request_headers):
            return {"data": data, "trace": request_headers.get("X-Trace")}
        """
    )
    entry = serving.deploy(folder)
    out = json.loads(serving.client.score(entry, b"[1]", RequestMeta(headers={"X-Trace": "t-1"})).body)
    assert out == {"data": "[1]", "trace": "t-1"}

    schema = serving.deploy(examples_ready / "schema-azure")
    with pytest.raises(BadInput, match="'data' parameter"):
        serving.client.score(schema, b'{"scale": 2}')
    with pytest.raises(BadInput, match="should be a JSON object"):
        serving.client.score(schema, b"[1, 2]")
    with pytest.raises(UnsupportedMediaType):
        serving.client.score(schema, b"data", RequestMeta(headers={"Content-Type": "text/plain"}))


def test_batch_script_scores_a_mini_batch(serving: Serving, make_package) -> None:  # type: ignore[no-untyped-def]
    folder = make_package(
        """
        import pandas as pd

        def init():
            pass

        def run(mini_batch):
            return pd.DataFrame({"item": mini_batch, "length": [len(x) for x in mini_batch]})
        """,
        model_yaml={"kind": "batch"},
    )
    entry = serving.deploy(folder)
    out = json.loads(serving.client.score(entry, b'["a.csv", "bb.csv"]').body)
    assert out == [{"item": "a.csv", "length": 5}, {"item": "bb.csv", "length": 6}]
    with pytest.raises(BadInput, match="list of strings"):
        serving.client.score(entry, b'{"not": "a batch"}')


BATCH_RECORDER = """
import os, time
import numpy as np

def preprocess(payload):
    return np.asarray(payload["x"], dtype=np.float32).reshape(1, -1)

def predict(batch):
    with open(os.environ["BATCH_LOG"], "a") as log:
        log.write(f"{len(batch)}\\n")
    time.sleep(0.02)  # a busy instance lets the next requests queue into one batch
    return batch * 2

def postprocess(row):
    return {"y": row[0].tolist()}
"""


def test_hooks_predict_runs_once_per_dynamic_batch(serving: Serving, make_package, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    batch_log = tmp_path / "batches.txt"
    folder = make_package(BATCH_RECORDER, model_yaml={"environment_variables": {"BATCH_LOG": str(batch_log)}})
    entry = serving.deploy(folder)

    async def fire() -> list[dict[str, list[float]]]:
        client = grpc_aio.InferenceServerClient(serving.triton.grpc_url)
        try:
            async def one(i: int) -> dict[str, list[float]]:
                body = InferInput("BODY", [1, 1], "BYTES")
                body.set_data_from_numpy(np.array([[json.dumps({"x": [i, i + 1]}).encode()]], dtype=np.object_))
                result = await client.infer(entry, [body])
                return json.loads(result.as_numpy("BODY")[0][0])

            return await asyncio.gather(*(one(i) for i in range(32)))
        finally:
            await client.close()

    answers = asyncio.run(fire())
    # Each caller gets its own row back, whatever batch it travelled in.
    assert answers == [{"y": [2.0 * i, 2.0 * i + 2]} for i in range(32)]
    sizes = [int(line) for line in batch_log.read_text().split()]
    assert sum(sizes) == 32
    assert max(sizes) > 1, sizes


def test_predict_failure_fails_the_batch_but_not_the_entry(serving: Serving, make_package) -> None:  # type: ignore[no-untyped-def]
    folder = make_package(
        """
        def predict(items):
            if any(item.get("boom") for item in items):
                raise RuntimeError("boom")
            return [{"ok": item["v"]} for item in items]
        """
    )
    entry = serving.deploy(folder)
    from turnout.errors import ScriptFailed

    with pytest.raises(ScriptFailed, match="predict"):
        serving.client.score(entry, b'{"boom": true, "v": 1}')
    assert json.loads(serving.client.score(entry, b'{"v": 2}').body) == {"ok": 2}


def _post_batch(serving: Serving, entry: str, items: list[tuple[bytes, bytes]]) -> tuple[int, bytes, int | None]:
    import http.client

    from turnout.wire import encode_batch

    payload, header_length = encode_batch(items)
    host, port = serving.triton.http_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("POST", f"/v2/models/{entry}/infer", payload,
                           {"Inference-Header-Content-Length": str(header_length)})
        response = connection.getresponse()
        length = response.getheader("Inference-Header-Content-Length")
        return response.status, response.read(), int(length) if length else None
    finally:
        connection.close()


def test_coalesced_request_answers_each_element_on_its_own(serving: Serving, make_package) -> None:  # type: ignore[no-untyped-def]
    from turnout.wire import decode_batch

    folder = make_package(
        """
        import json
        from turnout.errors import BadInput

        def init():
            pass

        def run(raw_data):
            data = json.loads(raw_data)
            if "x" not in data:
                raise BadInput("no x")
            return {"y": data["x"] * 2}
        """
    )
    entry = serving.deploy(folder)
    inline = b'{"inline_errors":true,"method":"POST","headers":{"Content-Type":"application/json"}}'
    items = [(b'{"x": 1}', inline), (b'{"nope": 0}', inline), (b'{"x": 3}', inline)]
    status, data, header_length = _post_batch(serving, entry, items)
    assert status == 200
    first, second, third = decode_batch(data, header_length, 3)
    assert isinstance(first, ScoringResult) and json.loads(first.body) == {"y": 2}
    assert isinstance(second, BadInput) and second.message == "no x"
    assert isinstance(third, ScoringResult) and json.loads(third.body) == {"y": 6}

    # Without the gateway's flag (a direct Triton client's own batch) the request fails as a whole.
    plain = b'{"method":"POST","headers":{}}'
    status, data, _ = _post_batch(serving, entry, [(body, plain) for body, _ in items])
    assert status == 400 and b"no x" in data


@pytest.mark.integration
def test_a_package_in_another_language_loads_whatever_the_nodes_locale(
        tmp_path: Path, make_package: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Names, descriptions and tags in French or Japanese; a node started with LC_ALL=C (an ASCII locale)."""
    from packager.build import build_entry
    from packager.sources import resolve_source
    from turnout.triton.client import TritonClient
    from turnout.triton.embedded import EmbeddedTriton

    folder = make_package(
        'import json, os\n\ndef predict(batch):\n    return batch\n\ndef postprocess(output):\n    return {"étiquette": "réponse", "x": output}\n',
        name="modèle", model_yaml={"description": "un modèle français, 日本語のモデル", "tags": {"équipe": "données"}})
    with resolve_source(str(folder)) as package:
        assert package.name == "mod-le"
        built = build_entry(package, tmp_path / "repository")
    monkeypatch.setenv("LC_ALL", "C")
    monkeypatch.setenv("LANG", "C")
    monkeypatch.delenv("PYTHONUTF8", raising=False)
    monkeypatch.setenv("PYTHONCOERCECLOCALE", "0")
    with EmbeddedTriton(repository=tmp_path / "repository", work_dir=tmp_path / "triton") as triton:
        with TritonClient(triton.http_url) as client:
            client.load(built.name)
            answer = client.score(built.name, '{"q": "café"}'.encode())
    assert answer.status == 200
    assert json.loads(answer.body) == {"étiquette": "réponse", "x": {"q": "café"}}
