"""Dropping packages into a running gateway's repository; swaps under load; crashes healed."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tarfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
import yaml

from tests.conftest import EXAMPLES, FIXTURES
from tests.gateway.conftest import BIN, ROLLOUT, GatewayProcess, deployment_yaml, endpoint_yaml
from tests.gateway.load import LoadLoop

pytestmark = pytest.mark.integration
VERSIONED = """
import json
VERSION = {version}

def init():
    pass

def run(raw_data):
    return {{"version": VERSION}}
"""


@pytest.fixture(scope="module")
def zone(tmp_path_factory: pytest.TempPathFactory, examples_ready: Path) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("zone")
    (root / "repository").mkdir()
    server = GatewayProcess(root / "repository", root / "state", "--drop-quiet-seconds", "0.5",
                            "--health-interval-seconds", "1")
    try:
        yield server.start()
    finally:
        server.stop()


def models(gateway: GatewayProcess, name: str) -> list[dict]:  # type: ignore[type-arg]
    response = httpx.get(f"{gateway.url}/models", headers=gateway.admin)
    return [m for m in response.json() if m["name"] == name]


def wait_ready(gateway: GatewayProcess, name: str, version: int | None = None, timeout: float = 30) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        ready = [m for m in models(gateway, name) if m["state"] == "ready"]
        if ready and (version is None or any(m["version"] == version for m in ready)):
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{name} (version {version}) not ready in {timeout}s: {models(gateway, name)}")


def wait_state(gateway: GatewayProcess, name: str, state: str, timeout: float = 30) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in models(gateway, name) if m["state"] == state]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"{name} never {state}: {models(gateway, name)}")


def package(tmp: Path, name: str, score: str, **model_yaml: object) -> Path:
    folder = tmp / name
    folder.mkdir(parents=True)
    (folder / "score.py").write_text(textwrap.dedent(score))
    (folder / "model.yaml").write_text(yaml.safe_dump({"name": name, **model_yaml}))
    return folder


def post(gateway: GatewayProcess, path: str, body: bytes = b"{}") -> httpx.Response:
    return httpx.post(gateway.url + path, content=body, headers=gateway.admin, timeout=30)


def test_dropped_sklearn_package_answers_within_ten_seconds(zone: GatewayProcess, tmp_path: Path) -> None:
    folder = tmp_path / "dropped-sklearn"
    shutil.copytree(EXAMPLES / "sklearn-azure" / "onlinescoring", folder)
    shutil.copytree(EXAMPLES / "sklearn-azure" / "model", folder / "model")
    started = time.monotonic()
    shutil.copytree(folder, zone.repository / "dropped-sklearn")  # a plain (non-atomic) copy
    body = (EXAMPLES / "sklearn-azure" / "sample-request.json").read_bytes()
    while time.monotonic() - started < 10:
        response = post(zone, "/models/dropped-sklearn/score", body)
        if response.status_code == 200:
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert len(response.json()) == 2
    print(f"\ndrop-to-live (sklearn package folder): {elapsed:.2f} s")


def test_every_kind_of_drop_goes_live(zone: GatewayProcess, tmp_path: Path) -> None:
    # An archive (written under a .part name, then renamed: atomic).
    archive = zone.repository / "onnx.tar.gz.part"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(EXAMPLES / "onnx-classifier", arcname="onnx-classifier")
    archive.rename(zone.repository / "onnx.tar.gz")
    # A folder with an Azure deployment YAML and its files.
    azure = tmp_path / "azure-drop"
    shutil.copytree(ROLLOUT / "code", azure / "code")
    shutil.copy(ROLLOUT / "blue.yml", azure / "blue.yml")
    shutil.move(str(azure), zone.repository / "azure-drop")
    # An entry already built by the packager.
    subprocess.run([str(BIN / "packager"), "build", str(EXAMPLES / "schema-azure"), "-r", str(tmp_path / "built")],
                   check=True, capture_output=True)
    shutil.move(str(tmp_path / "built" / "schema-azure-v1"), zone.repository / "schema-azure-v1")
    # A plain Triton Python model, no Turnout at all.
    add_sub = tmp_path / "add_sub"
    (add_sub / "1").mkdir(parents=True)
    (add_sub / "config.pbtxt").write_text(textwrap.dedent("""
        name: "add_sub"
        backend: "python"
        input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
        instance_group [ { kind: KIND_CPU } ]
    """))
    (add_sub / "1" / "model.py").write_text(textwrap.dedent("""
        import triton_python_backend_utils as pb_utils

        class TritonPythonModel:
            def execute(self, requests):
                responses = []
                for request in requests:
                    a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                    b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
                    responses.append(pb_utils.InferenceResponse(output_tensors=[
                        pb_utils.Tensor("OUTPUT0", a + b), pb_utils.Tensor("OUTPUT1", a - b)]))
                return responses
    """))
    add_sub.rename(zone.repository / "add_sub")

    for name in ("onnx-classifier", "rollout-blue", "schema-azure", "add_sub"):
        wait_ready(zone, name)
    assert post(zone, "/models/onnx-classifier/score", (EXAMPLES / "onnx-classifier" / "sample-request.json")
                .read_bytes()).json()[0]["label"] == "setosa"
    assert post(zone, "/models/rollout-blue/score", b'{"x": 5}').json() == {"color": "blue", "echo": 5}
    assert post(zone, "/models/schema-azure/score", b'{"data": [[1, 2, 3]]}').json() == {"predictions": [6.5]}
    client = triton_http.InferenceServerClient(f"127.0.0.1:{zone.port}")
    try:
        a, b = np.arange(4, dtype=np.float32), np.ones(4, dtype=np.float32)
        inputs = [triton_http.InferInput("INPUT0", [4], "FP32"), triton_http.InferInput("INPUT1", [4], "FP32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        result = client.infer("add_sub", inputs, headers=zone.admin)
        assert result.as_numpy("OUTPUT0").tolist() == (a + b).tolist()
    finally:
        client.close()
    plain = post(zone, "/models/add_sub/score")
    assert plain.status_code == 400 and "/v2/models/add_sub/infer" in plain.json()["error"]["message"]


def test_incomplete_drops_wait(zone: GatewayProcess, tmp_path: Path) -> None:
    folder = zone.repository / "patient"
    folder.mkdir()
    (folder / ".turnout-pending").write_text("")
    (folder / "score.py").write_text(VERSIONED.format(version=1))
    (folder / "model.yaml").write_text("name: patient\n")
    time.sleep(2.5)  # five quiet periods: the marker holds it back
    assert models(zone, "patient") == []
    assert post(zone, "/models/patient/score").status_code == 404
    (folder / ".turnout-pending").unlink()
    wait_ready(zone, "patient", 1)
    # A half-written archive under its final name is never loaded half-written.
    partial = zone.repository / "torn.zip"
    partial.write_bytes(b"PK\x03\x04 not finished")
    torn = wait_state(zone, "torn", "failed")
    assert "cannot be extracted" in torn["reason"]
    assert [m["state"] for m in models(zone, "torn")] == ["failed"]
    assert post(zone, "/models/torn/score").status_code == 503


def test_bad_drops_are_reported_and_contained(zone: GatewayProcess, tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "broken" / "init_raises", zone.repository / "init_raises")
    failed = wait_state(zone, "init_raises", "failed")
    assert "init() failed: RuntimeError: boom in init" in failed["reason"]
    assert "Traceback" in failed["log_tail"]
    # A broken new version of a serving model: the old one keeps serving.
    good = package(tmp_path, "steady", VERSIONED.format(version=1))
    shutil.move(str(good), zone.repository / "steady")
    wait_ready(zone, "steady", 1)
    (zone.repository / "steady" / "score.py").write_text("def init():\n    raise ValueError('v2 is broken')\n"
                                                         "def run(raw_data):\n    return 2\n")
    wait_state(zone, "steady", "failed")
    response = post(zone, "/models/steady/score")
    assert response.status_code == 200 and response.json() == {"version": 1}


def test_removed_drop_answers_404(zone: GatewayProcess, tmp_path: Path) -> None:
    shutil.move(str(package(tmp_path, "fleeting", VERSIONED.format(version=1))), zone.repository / "fleeting")
    wait_ready(zone, "fleeting")
    shutil.rmtree(zone.repository / "fleeting")
    deadline = time.monotonic() + 15
    while post(zone, "/models/fleeting/score").status_code != 404 and time.monotonic() < deadline:
        time.sleep(0.1)
    gone = post(zone, "/models/fleeting/score")
    assert gone.status_code == 404
    assert "was removed" in gone.json()["error"]["message"]


def test_new_version_under_load_has_no_failed_request(zone: GatewayProcess, tmp_path: Path) -> None:
    shutil.move(str(package(tmp_path, "rolling", VERSIONED.format(version=1))), zone.repository / "rolling")
    wait_ready(zone, "rolling", 1)
    loop = LoadLoop(f"{zone.url}/models/rolling/score", b"{}", zone.admin, "x-turnout-model-version").start()
    loop.wait_for(lambda outcomes: len(outcomes) > 200)
    (zone.repository / "rolling" / "score.py").write_text(VERSIONED.format(version=2))
    loop.wait_for(lambda outcomes: any(o.served_by == "2" for o in outcomes))
    outcomes = loop.finish()
    assert len(outcomes) >= 2000
    assert loop.failures() == []
    # Each answer came from the version its header names, and the switch happened once.
    served = [o.served_by for o in outcomes]
    assert all(json.loads(o.body)["version"] == int(o.served_by) for o in outcomes)
    assert set(served) == {"1", "2"}
    print(f"\nversion swap under load: {len(outcomes)} requests, {len(loop.failures())} failed")
    old = next(m for m in models(zone, "rolling") if m["version"] == 1)
    assert old["state"] == "unloaded" and "replaced by version 2" in old["reason"]
    assert post(zone, "/models/rolling/versions/1/score").status_code == 404


def test_deployment_update_and_traffic_shift_under_load(zone: GatewayProcess, tmp_path: Path) -> None:
    zone.cli("endpoint", "create", "-f", str(endpoint_yaml(tmp_path, "live")))
    zone.cli("deployment", "create", "-f", str(deployment_yaml(tmp_path, "blue", endpoint="live")), "--all-traffic")
    zone.cli("deployment", "create", "-f", str(deployment_yaml(tmp_path, "green", endpoint="live")))
    key = zone.keys("live")[0]
    loop = LoadLoop(f"{zone.url}/endpoints/live/score", b'{"x": 1}', {"Authorization": f"Bearer {key}"},
                    "azureml-model-deployment").start()
    loop.wait_for(lambda outcomes: len(outcomes) > 200)
    # A new generation of blue (new environment variable), while blue takes all the traffic.
    updated = deployment_yaml(tmp_path, "blue", endpoint="live", environment_variables={"COLOR": "blue"},
                              instance_count=2)
    zone.cli("deployment", "update", "-f", str(updated))
    for green in (10, 50, 90, 100):
        zone.cli("endpoint", "update", "-n", "live", "--traffic", f"blue={100 - green} green={green}")
        time.sleep(0.3)
    outcomes = loop.finish()
    assert len(outcomes) >= 2000
    assert loop.failures() == []
    assert all(json.loads(o.body)["color"] == o.served_by for o in outcomes)
    assert outcomes[-1].served_by == "green"
    print(f"\ndeployment update + traffic shift under load: {len(outcomes)} requests, 0 failed")
    shown = zone.cli_json("deployment", "show", "-n", "blue", "-e", "live")
    assert (shown["generation"], shown["instance_count"]) == (2, 2)


CRASHER = """
import json, os

def init():
    pass

def run(raw_data):
    if json.loads(raw_data).get("crash"):
        os._exit(1)  # takes Triton's stub process down with it
    return "alive"
"""


def test_crashed_process_is_healed(zone: GatewayProcess, tmp_path: Path) -> None:
    shutil.move(str(package(tmp_path, "crasher", CRASHER)), zone.repository / "crasher")
    wait_ready(zone, "crasher")
    crashed = post(zone, "/models/crasher/score", b'{"crash": true}')
    assert crashed.status_code == 503, crashed.text
    assert crashed.headers["retry-after"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        response = post(zone, "/models/crasher/score", b"{}")
        if response.status_code == 200:
            break
        assert response.status_code == 503  # restarting: a quick 503, never a hang
        time.sleep(0.1)
    assert response.json() == "alive"
    status = models(zone, "crasher")[0]
    assert status["restarts"] == 1 and "process gone" in status["last_crash"]
    # Others never noticed.
    assert post(zone, "/models/patient/score").status_code == 200


def test_sigkill_during_a_swap_converges_on_restart(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    repository.mkdir()
    slow = VERSIONED.replace("def init():\n    pass", "def init():\n    import time\n    time.sleep(2)")
    first = GatewayProcess(repository, tmp_path / "state", "--drop-quiet-seconds", "0.3").start()
    try:
        (repository / "swap").mkdir()
        (repository / "swap" / "model.yaml").write_text("name: swap\n")
        (repository / "swap" / "score.py").write_text(slow.format(version=1))
        wait_ready(first, "swap", 1)
        (repository / "swap" / "score.py").write_text(slow.format(version=2))
        time.sleep(3.5)  # v2 validated and loading (init sleeps 2 s)
    finally:
        first.stop(signal.SIGKILL)
    second = GatewayProcess(repository, tmp_path / "state", "--drop-quiet-seconds", "0.3").start()
    try:
        ready = [m for m in models(second, "swap") if m["state"] == "ready"]
        assert [m["version"] for m in ready] == [2]
        assert post(second, "/models/swap/score").json() == {"version": 2}
        listed = subprocess.run([str(BIN / "packager"), "list", "--registry", str(tmp_path / "state" / "registry")],
                                capture_output=True, text=True, check=True).stdout
        assert "swap" in listed and " 1 " in listed and " 2 " in listed
        built = sorted(p.name for p in (tmp_path / "state" / "built").iterdir())
        assert built == ["drop.swap.v2"]
    finally:
        second.stop()


def test_kept_versions_serve_again_after_a_restart(tmp_path: Path) -> None:
    """--keep-versions 2: version 1 stays callable at /versions/1 after version 2 arrives, and still is
    after the gateway restarts, though the repository holds only version 2's files."""
    repository, state = tmp_path / "repository", tmp_path / "state"
    repository.mkdir()
    args = ("--drop-quiet-seconds", "0.3", "--keep-versions", "2")
    (repository / "kept").mkdir()
    (repository / "kept" / "model.yaml").write_text("name: kept\n")
    first = GatewayProcess(repository, state, *args).start()
    try:
        (repository / "kept" / "score.py").write_text(VERSIONED.format(version=1))
        wait_ready(first, "kept", 1)
        (repository / "kept" / "score.py").write_text(VERSIONED.format(version=2))
        wait_ready(first, "kept", 2)
        assert post(first, "/models/kept/versions/1/score").json() == {"version": 1}
    finally:
        first.stop()
    second = GatewayProcess(repository, state, *args).start()
    try:
        assert sorted(m["version"] for m in models(second, "kept") if m["state"] == "ready") == [1, 2]
        assert post(second, "/models/kept/score").json() == {"version": 2}
        assert post(second, "/models/kept/versions/1/score").json() == {"version": 1}
    finally:
        second.stop()


def test_entry_built_just_before_start_is_served_without_the_watcher(tmp_path: Path) -> None:
    """A gateway started right after a build (with --no-watch) waits for the entry to settle and loads it;
    it never mistakes it for an orphan to unload."""
    repository = tmp_path / "repository"
    subprocess.run([str(BIN / "packager"), "build", str(EXAMPLES / "schema-azure"), "-r", str(repository)],
                   check=True, capture_output=True)
    server = GatewayProcess(repository, tmp_path / "state", "--no-watch", "--log-level", "info").start()
    try:
        response = httpx.post(f"{server.url}/models/schema-azure/score", content=b'{"data": [[1, 2, 3]]}',
                              headers={**server.admin, "x-request-id": "trace-7"})
        assert response.json() == {"predictions": [6.5]}
    finally:
        server.stop()
    # One structured access line per scoring request.
    access = [json.loads(line.split("turnout.gateway.access: ", 1)[1])
              for line in server.log.read_text().splitlines() if "turnout.gateway.access: " in line]
    assert {"request_id": "trace-7", "model": "schema-azure", "status": 200, "deployment": "1"}.items() <= access[-1].items()


def test_drops_are_seen_with_a_relative_repository_path(tmp_path: Path) -> None:
    """As the README runs it: `gateway serve --repository model_repository` from the checkout."""
    (tmp_path / "model_repository").mkdir()
    server = GatewayProcess(Path("model_repository"), tmp_path / "state", "--drop-quiet-seconds", "0.3",
                            cwd=tmp_path).start()
    try:
        shutil.move(str(package(tmp_path / "src", "relative", VERSIONED.format(version=1))),
                    tmp_path / "model_repository" / "relative")
        wait_ready(server, "relative", 1)
        assert post(server, "/models/relative/score").json() == {"version": 1}
    finally:
        server.stop()
