"""Batch jobs: files/s of a job through the gateway against the in-process limit, the per-mini-batch overhead,
and online p99 while a job saturates the node. Prints a table.

``python -m benchmarks.batch [--files 10000] [--mini-batch-size 10] [--concurrency 2] [--work-us 0]``

The in-process limit is the same ``run()`` over the same mini-batches in plain processes, one per core, no
server. Nothing leaves 127.0.0.1; the gateway and its Triton stop at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.loadgen import _percentile
from benchmarks.run import wait_http
from turnout.triton.embedded import free_ports

BIN = Path(sys.executable).parent
SCRIPT = '''
import os
import time

WORK = float(os.environ.get("WORK_US", "0")) / 1e6

def init():
    pass

def run(mini_batch):
    out = []
    for path in mini_batch:
        with open(path) as f:
            out.append(f"{os.path.basename(path)} {len(f.read())}")
        end = time.perf_counter() + WORK
        while time.perf_counter() < end:
            pass
    return out
'''
ECHO = "import json\n\ndef init():\n    pass\n\ndef run(raw_data):\n    return json.loads(raw_data)\n"


def _plain_run(batch: list[str]) -> int:
    work = float(os.environ.get("WORK_US", "0")) / 1e6
    out = []
    for path in batch:
        with open(path) as f:
            out.append(f"{os.path.basename(path)} {len(f.read())}")
        end = time.perf_counter() + work
        while time.perf_counter() < end:
            pass
    return len(out)


def _in_process(files: list[str], size: int, workers: int) -> float:
    batches = [files[i:i + size] for i in range(0, len(files), size)]
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        assert sum(pool.map(_plain_run, batches, chunksize=1)) == len(files)
    return time.perf_counter() - started


def _online(url: str, headers: dict[str, str], stop: threading.Event, latencies: list[float]) -> None:
    with httpx.Client(timeout=10, headers=headers) as client:
        while not stop.is_set() and len(latencies) < 20000:
            started = time.perf_counter()
            if client.post(f"{url}/models/echo/score", json={"x": 1}).status_code != 200:
                latencies.append(float("inf"))
                continue
            latencies.append(time.perf_counter() - started)
            time.sleep(0.01)


def _until_done(url: str, headers: dict[str, str], job: str) -> dict[str, Any]:
    while True:
        shown: dict[str, Any] = httpx.get(f"{url}/jobs/{job}", headers=headers, timeout=10).json()
        if shown["status"] in ("Completed", "Failed", "Canceled"):
            return shown
        time.sleep(0.1)


def _cli(url: str, state: Path, *args: str) -> str:
    env = {**os.environ, "TURNOUT_GATEWAY_URL": url, "TURNOUT_STATE_DIR": str(state)}
    return subprocess.run([str(BIN / "gateway"), *args], check=True, capture_output=True, text=True, env=env).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--mini-batch-size", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=2, help="max_concurrency_per_instance")
    parser.add_argument("--work-us", type=float, default=0.0, help="CPU work of run() per file, in microseconds")
    parser.add_argument("--online-work-us", type=float, default=500.0,
                        help="run()'s work per file in the job that online latency is measured under")
    args = parser.parse_args()
    os.environ["WORK_US"] = str(args.work_us)
    with tempfile.TemporaryDirectory(prefix="turnout-batch-") as tmp:
        root = Path(tmp)
        data = root / "data"
        data.mkdir()
        for i in range(args.files):
            (data / f"f{i:06d}.txt").write_text(f"row {i}\n")
        files = sorted(str(p) for p in data.iterdir())
        (root / "code").mkdir()
        (root / "code" / "score.py").write_text(SCRIPT)
        (root / "echo").mkdir()
        (root / "echo" / "score.py").write_text(ECHO)
        (root / "deployment.yml").write_text(json.dumps({
            "name": "bench", "endpoint_name": "bench-batch", "type": "model",
            "code_configuration": {"code": "code", "scoring_script": "score.py"},
            "environment_variables": {"WORK_US": str(args.work_us)},
            "settings": {"mini_batch_size": args.mini_batch_size, "max_concurrency_per_instance": args.concurrency,
                         "output_action": "append_row"}}))
        (root / "endpoint.yml").write_text(json.dumps({"name": "bench-batch", "auth_mode": "key"}))
        subprocess.run([str(BIN / "packager"), "build", str(root / "echo"), "-r", str(root / "repo"), "--name", "echo"],
                       check=True, capture_output=True)
        limit = min(_in_process(files, args.mini_batch_size, os.cpu_count() or 1) for _ in range(3))

        port, grpc_port = free_ports(2)
        url, state = f"http://127.0.0.1:{port}", root / "state"
        gateway = subprocess.Popen(
            [str(BIN / "gateway"), "serve", "--repository", str(root / "repo"), "--state", str(state),
             "--port", str(port), "--grpc-port", str(grpc_port), "--log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_http(f"{url}/readyz", gateway)
            headers = {"Authorization": f"Bearer {(state / 'admin.key').read_text().strip()}"}
            _cli(url, state, "batch-endpoint", "create", "-f", str(root / "endpoint.yml"))
            _cli(url, state, "batch-deployment", "create", "-f", str(root / "deployment.yml"), "--set-default")
            _cli(url, state, "batch-deployment", "create", "-f", str(root / "deployment.yml"), "-n", "busy",
                 "--set", f"environment_variables.WORK_US={args.online_work_us}")

            idle: list[float] = []
            stop = threading.Event()
            worker = threading.Thread(target=_online, args=(url, headers, stop, idle))
            worker.start()
            time.sleep(5)
            stop.set()
            worker.join()

            job = json.loads(_cli(url, state, "batch-endpoint", "invoke", "-n", "bench-batch", "--input", str(data)))
            shown = _until_done(url, headers, job["name"])
            seconds = (datetime.fromisoformat(shown["ended"]) - datetime.fromisoformat(shown["started"])).total_seconds()
            rows = len(Path(shown["outputs"]["score"]["file"]).read_text().splitlines())

            # Online latency while a longer job (more work per file) keeps every instance busy.
            during: list[float] = []
            stop = threading.Event()
            worker = threading.Thread(target=_online, args=(url, headers, stop, during))
            busy = json.loads(_cli(url, state, "batch-endpoint", "invoke", "-n", "bench-batch", "--input", str(data),
                                   "--deployment-name", "busy"))
            worker.start()
            busy_job = _until_done(url, headers, busy["name"])
            stop.set()
            worker.join()
        finally:
            gateway.terminate()
            gateway.wait(60)
    batches = -(-args.files // args.mini_batch_size)
    width = args.concurrency
    overhead_ms = max(0.0, (seconds - limit) * width / batches * 1e3)
    table = [
        ("files", f"{args.files:,} ({batches:,} mini-batches of {args.mini_batch_size}, {width} in flight), "
                  f"run() work {args.work_us:g} us per file"),
        ("job status, output rows", f"{shown['status']}, {rows:,}"),
        ("job wall time (started -> ended)", f"{seconds:.2f} s = {args.files / seconds:,.0f} files/s"),
        (f"in-process limit ({os.cpu_count()} processes, no server)", f"{limit:.2f} s = {args.files / limit:,.0f} files/s"),
        ("job / limit", f"{limit / seconds:.2f}x"),
        ("overhead per mini-batch (in-flight adjusted)", f"{overhead_ms:.2f} ms"),
        ("online echo p50 / p99, idle", f"{_percentile(idle, 0.5) * 1e3:.2f} / {_percentile(idle, 0.99) * 1e3:.2f} ms "
                                         f"({len(idle)} requests)"),
        (f"online echo p50 / p99, during a {busy_job['elapsed_seconds']:.1f} s job ({args.online_work_us:g} us/file)",
         f"{_percentile(during, 0.5) * 1e3:.2f} / "
                                                  f"{_percentile(during, 0.99) * 1e3:.2f} ms ({len(during)} requests, "
                                                  f"{sum(1 for x in during if x == float('inf'))} failed)"),
    ]
    print("| measure | value |\n|---|---|")
    for name, value in table:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
