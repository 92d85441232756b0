"""Batch endpoints end to end: Azure's batch YAML through the verbs, jobs on a real gateway over real Triton.

One gateway for the module; the last test kills it with SIGKILL mid-job and starts it again on the same state.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import FIXTURES
from tests.gateway.conftest import BIN, GatewayProcess

pytestmark = pytest.mark.integration
BATCH = FIXTURES / "batch"


@pytest.fixture(scope="module")
def batch_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("batch")
    repository = root / "repository"
    subprocess.run([str(BIN / "packager"), "build", str(FIXTURES / "echo"), "-r", str(repository), "--name", "echo"],
                   check=True, capture_output=True)
    server = GatewayProcess(repository, root / "state").start()
    server.cli("batch-endpoint", "create", "-f", str(BATCH / "endpoint.yml"))
    server.cli("batch-deployment", "create", "-f", str(BATCH / "deployment.yml"), "--set-default")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root / "state" / "triton", ignore_errors=True)


def _inputs(folder: Path, texts: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def _invoke(gw: GatewayProcess, *args: str) -> dict[str, Any]:
    return gw.cli_json("batch-endpoint", "invoke", "-n", "lines-batch", *args)  # type: ignore[no-any-return]


def _wait(gw: GatewayProcess, job: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown: dict[str, Any] = httpx.get(f"{gw.url}/jobs/{job}", headers=gw.admin, timeout=10).json()
        if shown["status"] in ("Completed", "Failed", "Canceled"):
            return shown
        time.sleep(0.2)
    raise AssertionError(f"job {job} did not end in {timeout} s")


def test_a_job_writes_every_row_once_in_input_order(batch_gateway: GatewayProcess, tmp_path: Path) -> None:
    # Files in nested folders, and slow ones early, so mini-batches finish out of order.
    texts = {f"part-{i // 10}/file-{i:03d}.txt": ("sleep:0.3" if i % 7 == 0 else f"row {i}") for i in range(25)}
    data = _inputs(tmp_path / "data", texts)
    (data / ".hidden").write_text("not data")
    result = batch_gateway.cli("batch-endpoint", "invoke", "-n", "lines-batch", "--input", str(data), "--stream")
    assert "Completed: 25 of 25 files succeeded" in result.stderr
    job = batch_gateway.cli_json("job", "show", "-n", json.loads(result.stdout)["name"])
    assert (job["status"], job["files_total"], job["mini_batches_total"]) == ("Completed", 25, 9)
    rows = Path(job["outputs"]["score"]["file"]).read_text().splitlines()
    expected = [f"{Path(name).name} {text.upper()}!" for name, text in sorted(texts.items())]
    assert rows == expected  # input order, exactly once, $SUFFIX from settings.environment_variables
    logs = batch_gateway.cli("job", "logs", "-n", job["name"]).stdout
    assert "scoring 3 files" in logs and "INFO root: scored file-000.txt" in logs

    download = tmp_path / "download"
    batch_gateway.cli("job", "download", "-n", job["name"], "--download-path", str(download))
    assert (download / "named-outputs" / "score" / "predictions.csv").read_text().splitlines() == expected
    assert (download / "logs" / "job.log").is_file()


def test_summary_only_writes_no_output_file(batch_gateway: GatewayProcess, tmp_path: Path) -> None:
    data = _inputs(tmp_path / "data", {f"f{i}.txt": "x" for i in range(4)})
    job = _wait(batch_gateway, _invoke(batch_gateway, "--input", str(data), "--set",
                                       "settings.output_action=summary_only")["name"])
    assert (job["status"], job["files_succeeded"], job["outputs"]["score"]["file"]) == ("Completed", 4, None)
    assert not any(Path(job["outputs"]["score"]["path"]).glob("*.csv"))


def test_a_failing_file_is_retried_then_counted_failed_alone(batch_gateway: GatewayProcess, tmp_path: Path) -> None:
    data = _inputs(tmp_path / "data", {f"f{i}.txt": ("bad" if i == 4 else f"ok {i}") for i in range(9)})
    job = _wait(batch_gateway, _invoke(batch_gateway, "--input", str(data))["name"])
    # Its mini-batch (f3 f4 f5) failed twice (max_retries 1), then its files ran alone: only f4 failed.
    assert (job["status"], job["files_succeeded"], job["files_failed"]) == ("Completed", 8, 1)
    assert job["mini_batches_retried"] >= 1
    assert "f4.txt: run() in batch_score.py raised ValueError: cannot score f4.txt" in job["error"]
    rows = Path(job["outputs"]["score"]["file"]).read_text().splitlines()
    assert [r.split()[0] for r in rows] == [f"f{i}.txt" for i in range(9) if i != 4]
    errors = (Path(job["logs"]) / "errors.txt").read_text()
    assert "file: " in errors and "f4.txt" in errors and "Traceback" in errors and "ValueError" in errors


@pytest.mark.parametrize(("threshold", "status"), [(1, "Completed"), (0, "Failed")])
def test_error_threshold_on_both_sides(batch_gateway: GatewayProcess, tmp_path: Path, threshold: int,
                                       status: str) -> None:
    data = _inputs(tmp_path / "data", {f"f{i}.txt": ("bad" if i == 1 else "ok") for i in range(6)})
    job = _wait(batch_gateway, _invoke(batch_gateway, "--input", str(data), "--set",
                                       f"settings.error_threshold={threshold}", "--mini-batch-size", "1")["name"])
    assert (job["status"], job["files_failed"]) == (status, 1)
    if status == "Failed":
        assert "error_threshold 0 exceeded: 1 files failed" in job["error"]
        assert Path(job["outputs"]["score"]["file"]).is_file()  # the output written so far is kept


def test_a_result_count_that_does_not_match_fails_the_mini_batch(batch_gateway: GatewayProcess, tmp_path: Path) -> None:
    data = _inputs(tmp_path / "data", {"a.txt": "extra"})
    job = _wait(batch_gateway, _invoke(batch_gateway, "--input", str(data))["name"])
    assert job["status"] == "Completed" and job["files_failed"] == 1
    assert "run() returned 2 results for a mini-batch of 1 files (expected 1)" in job["error"]


def test_submit_is_idempotent_by_job_name(batch_gateway: GatewayProcess, tmp_path: Path) -> None:
    data = _inputs(tmp_path / "data", {f"f{i}.txt": "ok" for i in range(3)})
    first = _invoke(batch_gateway, "--input", str(data), "--job-name", "same-job")
    again = _invoke(batch_gateway, "--input", str(data), "--job-name", "same-job")
    assert first["name"] == again["name"] == "same-job" and first["created"] == again["created"]
    other = _inputs(tmp_path / "other", {"g.txt": "ok"})
    clash = batch_gateway.cli("batch-endpoint", "invoke", "-n", "lines-batch", "--input", str(other),
                              "--job-name", "same-job", check=False)
    assert clash.returncode == 1 and "exists with other inputs or settings" in clash.stderr

    # Azure's REST invoke with the endpoint's key, and an Idempotency-Key header.
    key = batch_gateway.cli_json("batch-endpoint", "get-credentials", "-n", "lines-batch")["primaryKey"]
    url, auth = f"{batch_gateway.url}/batch-endpoints/lines-batch/jobs", {"Authorization": f"Bearer {key}"}
    body = {"input": str(data)}
    refused = httpx.post(url, json=body, headers=auth, timeout=30)
    assert refused.status_code == 403 and "outside the folders an endpoint credential may use" in refused.text
    assert httpx.post(url, json=body, timeout=30).status_code == 401
    admin = {**batch_gateway.admin, "Idempotency-Key": "rest-job"}
    created = httpx.post(url, json=body, headers=admin, timeout=30)
    repeated = httpx.post(url, json=body, headers=admin, timeout=30)
    assert (created.status_code, repeated.status_code) == (201, 200)
    assert created.json()["name"] == repeated.json()["name"] == "rest-job"
    assert _wait(batch_gateway, "rest-job")["status"] == "Completed"

    # Azure's own REST body, as its docs write it
    azure_body = {"properties": {"InputData": {"mnistinput": {"JobInputType": "UriFolder", "Uri": str(data)}}}}
    azure_job = httpx.post(url, json=azure_body, headers=batch_gateway.admin, timeout=30)
    assert azure_job.status_code == 201 and azure_job.json()["input_type"] == "uri_folder"
    url_input = {"properties": {"InputData": {"x": {"JobInputType": "UriFolder", "Uri": "https://example.invalid/d"}}}}
    refused_url = httpx.post(url, json=url_input, headers=batch_gateway.admin, timeout=30)
    assert refused_url.status_code == 400 and "reads inputs from the gateway's file system" in refused_url.text
    assert _wait(batch_gateway, azure_job.json()["name"])["status"] == "Completed"


def test_cancel_lets_in_flight_mini_batches_finish(batch_gateway: GatewayProcess, tmp_path: Path) -> None:
    data = _inputs(tmp_path / "data", {f"f{i:02d}.txt": "sleep:0.5" for i in range(20)})
    job = _invoke(batch_gateway, "--input", str(data), "--mini-batch-size", "1")
    time.sleep(1.0)
    batch_gateway.cli("job", "cancel", "-n", job["name"])
    ended = _wait(batch_gateway, job["name"])
    assert ended["status"] == "Canceled"
    assert 0 < ended["files_succeeded"] < 20 and ended["files_failed"] == 0
    rows = Path(ended["outputs"]["score"]["file"]).read_text().splitlines()
    assert len(rows) == ended["files_succeeded"]


def test_bad_input_is_refused_at_submit(batch_gateway: GatewayProcess, tmp_path: Path) -> None:
    def refused(*args: str, endpoint: str = "lines-batch") -> str:
        result = batch_gateway.cli("batch-endpoint", "invoke", "-n", endpoint, *args, check=False)
        assert result.returncode != 0, result.stdout
        return result.stderr

    data = _inputs(tmp_path / "data", {"a.txt": "ok"})
    assert f"the input '{tmp_path / 'nope'}' does not exist" in refused("--input", str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    assert "holds no files" in refused("--input", str(tmp_path / "empty"))
    assert "matches no file" in refused("--input", str(tmp_path / "*.nothing"))
    assert "is a folder, not a file: use --input-type uri_folder" in refused("--input", str(data), "--input-type",
                                                                             "uri_file")
    assert "no batch endpoint named 'ghost'" in refused("--input", str(data), endpoint="ghost")
    assert "has no deployment 'ghost'" in refused("--input", str(data), "--deployment-name", "ghost")
    assert "mini_batch_size" in refused("--input", str(data), "--set", "settings.mini_batch_size=0")
    assert "inside the gateway's state folder" in refused("--input", str(batch_gateway.state))
    assert "environment_variables belong to the deployment" in refused(
        "--input", str(data), "--set", "settings.environment_variables.SUFFIX=x")
    assert "more than the deployment's 2 model instances" in refused(
        "--input", str(data), "--set", "settings.max_concurrency_per_instance=3")

    out = tmp_path / "out"
    first = _wait(batch_gateway, _invoke(batch_gateway, "--input", str(data), "--output-path", str(out))["name"])
    assert first["status"] == "Completed" and (out / "predictions.csv").is_file()
    assert f"{out / 'predictions.csv'} exists already" in refused("--input", str(data), "--output-path", str(out))
    again = _invoke(batch_gateway, "--input", str(data), "--output-path", str(out), "--set", "overwrite=true")
    assert _wait(batch_gateway, again["name"])["status"] == "Completed"

    no_default = tmp_path / "endpoint.yml"
    no_default.write_text(yaml.safe_dump({"name": "empty-batch", "auth_mode": "aad_token"}))
    batch_gateway.cli("batch-endpoint", "create", "-f", str(no_default))
    assert "has no default deployment and none was named" in refused("--input", str(data), endpoint="empty-batch")
    online = batch_gateway.cli("batch-deployment", "create", "-f", str(FIXTURES / "rollout" / "blue.yml"),
                               "-e", "empty-batch", check=False)
    assert online.returncode == 2 and "is an online deployment" in online.stderr


def test_online_requests_answer_during_a_job(batch_gateway: GatewayProcess, tmp_path: Path) -> None:
    data = _inputs(tmp_path / "data", {f"f{i:02d}.txt": "sleep:0.2" for i in range(24)})
    job = _invoke(batch_gateway, "--input", str(data), "--mini-batch-size", "2")
    latencies, codes = [], []
    with httpx.Client(timeout=10, headers=batch_gateway.admin) as client:
        while len(latencies) < 200:
            started = time.perf_counter()
            codes.append(client.post(f"{batch_gateway.url}/models/echo/score", json={"x": 1}).status_code)
            latencies.append(time.perf_counter() - started)
    assert codes == [200] * 200
    shown = httpx.get(f"{batch_gateway.url}/jobs/{job['name']}", headers=batch_gateway.admin).json()
    assert shown["status"] == "Running", "the job should still be running while the online calls were made"
    assert _wait(batch_gateway, job["name"])["status"] == "Completed"
    metrics = httpx.get(f"{batch_gateway.url}/metrics", headers=batch_gateway.admin).text
    assert 'turnout_batch_jobs{state="Completed"}' in metrics and "turnout_batch_files_total" in metrics


def test_a_no_code_mlflow_batch_deployment_scores_csv_files(batch_gateway: GatewayProcess, tmp_path: Path) -> None:
    created = batch_gateway.cli("batch-deployment", "create", "-f",
                                str(FIXTURES / "mlflow_model" / "no-code-batch-deployment.yml"))
    assert "served by Turnout's mlflow.pyfunc script" in created.stderr
    data = _inputs(tmp_path / "data", {"a.csv": "a,b,c\n1,0,1\n2,2,2\n", "b.csv": "a,b,c\n0,1,0\n",
                                       "notes.txt": "not a table"})
    job = _wait(batch_gateway, _invoke(batch_gateway, "--input", str(data), "--deployment-name", "weighted-mlflow")["name"])
    assert (job["files_succeeded"], job["files_failed"]) == (2, 1)
    # Azure's no-code output: the file's name, then the prediction, one row per input row, in order
    assert Path(job["outputs"]["score"]["file"]).read_text().splitlines() == ["a.csv 4.0", "a.csv 12.0", "b.csv 2.0"]
    assert "file type 'txt' is not read by the no-code MLflow batch deployment" in job["error"]


def test_a_crashed_model_process_is_restarted_and_the_job_completes(batch_gateway: GatewayProcess,
                                                                     tmp_path: Path) -> None:
    texts = {f"f{i:02d}.txt": "sleep:0.2" for i in range(30)}
    data = _inputs(tmp_path / "data", texts)
    job = _invoke(batch_gateway, "--input", str(data), "--mini-batch-size", "1")
    stubs: list[int] = []
    deadline = time.monotonic() + 30
    while not stubs and time.monotonic() < deadline:
        shown = httpx.get(f"{batch_gateway.url}/jobs/{job['name']}", headers=batch_gateway.admin).json()
        if shown["mini_batches_done"] >= 3:
            stubs = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _is_stub_of(p, "upper")]
        time.sleep(0.05)
    assert stubs, "no stub process of the batch deployment found"
    os.kill(stubs[0], signal.SIGKILL)
    ended = _wait(batch_gateway, job["name"])
    assert (ended["status"], ended["files_succeeded"], ended["files_failed"]) == ("Completed", 30, 0), ended
    rows = Path(ended["outputs"]["score"]["file"]).read_text().splitlines()
    assert rows == [f"{name} SLEEP:0.2!" for name in sorted(texts)]
    shown = batch_gateway.cli_json("batch-deployment", "show", "-n", "upper", "-e", "lines-batch")
    assert shown["state"] == "ready"


def _is_stub_of(proc: Path, deployment: str) -> bool:
    try:
        command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return "triton_python_backend_stub" in command and f"lines-batch.{deployment}." in command


def test_a_job_resumes_after_sigkill_with_exactly_one_row_per_file(batch_gateway: GatewayProcess,
                                                                     tmp_path: Path) -> None:
    texts = {f"f{i:03d}.txt": "sleep:0.15" for i in range(60)}
    data = _inputs(tmp_path / "data", texts)
    job = _invoke(batch_gateway, "--input", str(data), "--mini-batch-size", "2", "--job-name", "survivor")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shown = httpx.get(f"{batch_gateway.url}/jobs/survivor", headers=batch_gateway.admin).json()
        if shown["mini_batches_done"] >= 5:
            break
        time.sleep(0.05)
    done_before = shown["mini_batches_done"]
    assert 5 <= done_before < 30, shown
    batch_gateway.stop(signal.SIGKILL)
    batch_gateway.start()
    ended = _wait(batch_gateway, job["name"])
    assert ended["status"] == "Completed" and ended["files_succeeded"] == 60
    rows = Path(ended["outputs"]["score"]["file"]).read_text().splitlines()
    assert rows == [f"{name} {text.upper()}!" for name, text in sorted(texts.items())]
    log = (Path(ended["logs"]) / "job.log").read_text()
    assert log.count("running: 60 files") == 2  # it ran twice: before the kill and after the restart
    # the mini-batches done before the kill were not run again
    user_logs = sorted((Path(ended["logs"]) / "user").glob("*.txt"))
    assert len(user_logs) == 30 and all(p.read_text().count("--- attempt") <= 2 for p in user_logs)
    assert sum(p.read_text().count("--- attempt") for p in user_logs) <= 30 + 2 * 2  # at most the in-flight ones again
