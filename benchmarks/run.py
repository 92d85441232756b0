"""Turnout's benchmark: the same scoring logic through Turnout's gateway, Triton direct, and
azureml-inference-server-http (default and WORKER_COUNT=2), interleaved in one time window.

    scripts/dev.sh bench [--client python|wrk] [--rounds 3] [--requests 3000] [--quick]
                         [--workloads echo torch-mlp ...] [--concurrency 1 16 64]
                         [--systems turnout triton-direct azml-w1 azml-w2 turnout-uncoalesced]

``turnout-uncoalesced`` (not run by default) is a second gateway on the same Triton started with
``--coalesce-depth 0``: what coalescing is worth, measured in the same time window.

Prints a table and writes it to benchmarks/results/<timestamp>.md. All traffic stays on 127.0.0.1.
azureml-inference-server-http runs from its own virtual environment (benchmarks/.venv-azml, made on
first use), so its Flask/gunicorn pins never touch Turnout's environment.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
SYSTEMS = ("turnout", "triton-direct", "azml-w1", "azml-w2", "turnout-uncoalesced")
DEFAULT_SYSTEMS = SYSTEMS[:4]  # turnout-uncoalesced: the gateway with --coalesce-depth 0, on request
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere in the checkout

from benchmarks.loadgen import RunStats, run_load, run_wrk  # noqa: E402
from benchmarks.procstats import tree_cpu_seconds  # noqa: E402
from packager.build import build_entry  # noqa: E402
from packager.sources import resolve_source  # noqa: E402
from turnout.triton.client import TritonClient  # noqa: E402
from turnout.triton.embedded import EmbeddedTriton, free_port  # noqa: E402
from turnout.wire import HEADER_LENGTH, encode_request  # noqa: E402

AZML_VENV = HERE / ".venv-azml"
AZML_PACKAGES = ["azureml-inference-server-http", "torch==2.13.0", "numpy<2", "scikit-learn", "joblib"]


@dataclass(frozen=True)
class Workload:
    name: str
    code: Path  # folder with the scripts
    hooks_script: str  # what Turnout serves
    azure_script: str  # what azureml-inference-server-http serves (same logic)
    body: bytes
    model: Path | None = None  # model folder, for AZUREML_MODEL_DIR
    instances: int = 1
    requests_factor: float = 1.0  # big payloads: fewer requests per run


def _bodies() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    return {
        "echo": json.dumps({"data": [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]], "id": "abc"}).encode(),
        "mlp": json.dumps({"data": rng.normal(size=(1, 256)).round(4).tolist()}).encode(),
        "sklearn": (ROOT / "examples" / "sklearn-azure" / "sample-request.json").read_bytes(),
        "big": json.dumps({"data": rng.normal(size=(3000, 40)).round(5).tolist()}).encode(),
    }


def workloads() -> list[Workload]:
    bodies = _bodies()
    sklearn = ROOT / "examples" / "sklearn-azure"
    return [
        Workload("echo", HERE / "workloads" / "echo", "score.py", "score.py", bodies["echo"]),
        Workload("torch-mlp", HERE / "workloads" / "mlp", "score_hooks.py", "score_azure.py", bodies["mlp"],
                 instances=2),
        Workload("sklearn-azure", sklearn / "onlinescoring", "score.py", "score.py", bodies["sklearn"],
                 model=sklearn / "model"),
        Workload("payload-1mb", HERE / "workloads" / "big", "score.py", "score.py", bodies["big"],
                 requests_factor=0.1),
    ]


# --- servers ---------------------------------------------------------------------------------------------


def build_turnout_entries(items: list[Workload], repository: Path, scratch: Path) -> None:
    for workload in items:
        folder = scratch / workload.name
        shutil.copytree(workload.code, folder, ignore=shutil.ignore_patterns("__pycache__"))
        spec: dict[str, object] = {"name": f"bench-{workload.name}", "scoring_script": workload.hooks_script,
                                   "instance": {"count": workload.instances}, "threads": 1}
        if workload.model is not None:
            shutil.copytree(workload.model, folder / "model")
            spec["model_path"] = "model"
        (folder / "model.yaml").write_text(yaml.safe_dump(spec))
        with resolve_source(str(folder)) as package:
            build_entry(package, repository, entry=f"bench-{workload.name}")


def ensure_azml_venv() -> Path:
    python = AZML_VENV / "bin" / "python"
    if not (AZML_VENV / "bin" / "azmlinfsrv").exists():
        print("==> creating benchmarks/.venv-azml with azureml-inference-server-http", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(AZML_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *AZML_PACKAGES], check=True)
    return AZML_VENV / "bin" / "azmlinfsrv"


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    roots: list[int] = field(default_factory=list)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


def start_azml(azmlinfsrv: Path, workload: Workload, workers: int, scratch: Path, log: Path) -> Server:
    port = free_port()
    model_dir = scratch / f"azml-models-{workload.name}"
    model_dir.mkdir(exist_ok=True)
    if workload.model is not None and not (model_dir / "model").exists():
        shutil.copytree(workload.model, model_dir / "model")
    env = {**os.environ, "AZUREML_MODEL_DIR": str(model_dir), "WORKER_COUNT": str(workers),
           "PYTHONPATH": str(workload.code), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [str(azmlinfsrv.parent / "python"), str(HERE / "azml_loopback.py"),
               "--entry_script", str(workload.code / workload.azure_script), "--port", str(port),
               "--worker_count", str(workers)]
    with open(log, "ab") as out:
        process = subprocess.Popen(command, cwd=workload.code, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = Server(f"azml-w{workers}", process, f"http://127.0.0.1:{port}/score", [process.pid])
    wait_http(f"http://127.0.0.1:{port}/", process)
    return server


def start_gateway(triton: EmbeddedTriton, repository: Path, scratch: Path, name: str, extra: list[str]) -> Server:
    port = free_port()
    nodes = scratch / "nodes.yaml"
    nodes.write_text(yaml.safe_dump({"nodes": [{"name": "bench", "url": triton.http_url,
                                                "grpc_url": triton.grpc_url, "pool": "cpu"}]}))
    gateway = Path(sys.executable).parent / "gateway"
    command = [str(gateway), "serve", "--nodes", str(nodes), "--repository", str(repository),
               "--state", str(scratch / f"{name}-state"), "--port", str(port), "--allow-anonymous",
               "--no-watch", "--log-level", "warning", *extra]
    with open(scratch / f"{name}.log", "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(name, process, f"http://127.0.0.1:{port}", [process.pid])
    wait_http(f"http://127.0.0.1:{port}/readyz", process)
    while httpx.get(f"http://127.0.0.1:{port}/readyz").status_code != 200:
        time.sleep(0.2)
    return server


# --- measuring -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    system: str
    url: str
    body: bytes
    headers: dict[str, str]
    roots: list[int]


@dataclass
class Result:
    stats: RunStats
    server_cpu_ms: float


def measure(target: Target, requests: int, concurrency: int, client: str, seconds: float) -> Result:
    before = tree_cpu_seconds(target.roots)
    if client == "wrk":
        stats = run_wrk(target.url, target.body, target.headers, seconds, concurrency)
    else:
        stats = run_load(target.url, target.body, target.headers, requests, concurrency)
    after = tree_cpu_seconds(target.roots)
    return Result(stats, (after - before) * 1e3 / max(stats.requests, 1))


def in_process_limit(workload: Workload, scratch: Path, seconds: float = 1.5) -> float:
    """Calls per second of the scoring logic alone, in this process, one thread: the compute ceiling."""
    os.environ["AZUREML_MODEL_DIR"] = str(scratch / f"azml-models-{workload.name}")
    sys.path.insert(0, str(workload.code))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{workload.name}", workload.code / workload.azure_script)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.init()
        text = workload.body.decode()
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            module.run(text)
            calls += 1
        return calls / (time.perf_counter() - started)
    finally:
        sys.path.remove(str(workload.code))


def median_result(results: list[Result]) -> dict[str, float]:
    return {
        "rps": statistics.median(r.stats.rps for r in results),
        "p50": statistics.median(r.stats.p50_ms for r in results),
        "p99": statistics.median(r.stats.p99_ms for r in results),
        "errors": sum(r.stats.errors for r in results),
        "cpu": statistics.median(r.server_cpu_ms for r in results),
        "client": statistics.median(r.stats.client_cpu_s / r.stats.seconds for r in results),
    }


def render(table: dict[tuple[str, int], dict[str, dict[str, float]]], limits: dict[str, float],
           meta: dict[str, object]) -> str:
    lines = [f"# Turnout benchmark, {meta['when']}", "",
             f"Load generator: {meta['client']}. "
             f"{meta['rounds']} interleaved rounds, medians; {meta['requests']} requests per run "
             f"(payload-1mb: a tenth); machine: {os.cpu_count()} cores. Server CPU counts every process of "
             "the system (gateway + Triton + stubs; Triton + stubs; gunicorn + workers). Client CPU is the "
             "load generator's share of one core."
             + (f" Gateway started with `{meta['gateway_args']}`." if meta.get("gateway_args") else ""), "",
             "| workload | clients | system | req/s | p50 ms | p99 ms | errors | server CPU ms/req | client CPU "
             "| vs azml best | vs Triton direct |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (workload, concurrency), systems in table.items():
        azml_best = max((v["rps"] for k, v in systems.items() if k.startswith("azml")), default=0.0)
        direct = systems.get("triton-direct", {}).get("rps", 0.0)
        for system, v in systems.items():
            vs_azml = f"{v['rps'] / azml_best:.2f}x" if azml_best else "-"
            vs_direct = f"{v['rps'] / direct:.2f}x" if direct else "-"
            lines.append(f"| {workload} | {concurrency} | {system} | {v['rps']:,.0f} | {v['p50']:.2f} | "
                         f"{v['p99']:.2f} | {v['errors']:.0f} | {v['cpu']:.2f} | {v['client']:.0%} | "
                         f"{vs_azml} | {vs_direct} |")
    lines += ["", "In-process compute limit (the scoring logic called directly, one thread):", ""]
    lines += [f"- {name}: {rate:,.0f} calls/s" for name, rate in limits.items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--workloads", nargs="+", default=None, help="subset of workload names")
    parser.add_argument("--quick", action="store_true", help="1 round, 500 requests: a smoke run")
    parser.add_argument("--client", choices=["python", "wrk"], default="python",
                        help="load generator: the async Python client (count-bounded) or wrk (time-bounded)")
    parser.add_argument("--seconds", type=float, default=5.0, help="run length with --client wrk")
    parser.add_argument("--systems", nargs="+", default=None, choices=SYSTEMS,
                        help="subset of systems (default: all; ratios need azml-w1/azml-w2 and triton-direct)")
    parser.add_argument("--gateway-arg", action="append", default=[], metavar="ARG",
                        help="extra 'gateway serve' argument, e.g. --gateway-arg=--coalesce-depth=0")
    args = parser.parse_args()
    systems = set(args.systems or DEFAULT_SYSTEMS)
    if args.quick:
        args.rounds, args.requests = 1, 500
    items = [w for w in workloads() if args.workloads is None or w.name in args.workloads]
    azmlinfsrv = ensure_azml_venv() if systems & {"azml-w1", "azml-w2"} else Path()
    scratch = Path(tempfile.mkdtemp(prefix="turnout-bench-"))
    servers: list[Server] = []
    triton: EmbeddedTriton | None = None
    try:
        repository = scratch / "repository"
        build_turnout_entries(items, repository, scratch / "packages")
        triton = EmbeddedTriton(repository=repository, work_dir=scratch / "triton").start()
        with TritonClient(triton.http_url) as client:
            for workload in items:
                client.load(f"bench-{workload.name}")
        triton_pid = triton._process.pid if triton._process else 0
        gateway = start_gateway(triton, repository, scratch, "gateway", args.gateway_arg)
        servers.append(gateway)
        uncoalesced = None
        if "turnout-uncoalesced" in systems:
            uncoalesced = start_gateway(triton, repository, scratch, "uncoalesced", [*args.gateway_arg, "--coalesce-depth=0"])
            servers.append(uncoalesced)
        table: dict[tuple[str, int], dict[str, dict[str, float]]] = {}
        limits: dict[str, float] = {}
        for workload in items:
            azml = [start_azml(azmlinfsrv, workload, workers, scratch, scratch / f"azml-{workload.name}.log")
                    for workers in (1, 2) if f"azml-w{workers}" in systems]
            servers.extend(azml)
            payload, header_length = encode_request(workload.body, b'{"method":"POST","headers":{}}')
            targets = [
                Target("turnout", f"{gateway.url}/models/bench-{workload.name}/score", workload.body,
                       {"Content-Type": "application/json"}, [gateway.process.pid, triton_pid]),
                *([Target("turnout-uncoalesced", f"{uncoalesced.url}/models/bench-{workload.name}/score",
                          workload.body, {"Content-Type": "application/json"}, [uncoalesced.process.pid, triton_pid])]
                  if uncoalesced else []),
                Target("triton-direct", f"{triton.http_url}/v2/models/bench-{workload.name}/infer", payload,
                       {HEADER_LENGTH: str(header_length), "Content-Type": "application/octet-stream"},
                       [triton_pid]),
                *[Target(s.name, s.url, workload.body, {"Content-Type": "application/json"}, s.roots) for s in azml],
            ]
            targets = [t for t in targets if t.system in systems]
            requests = max(50, int(args.requests * workload.requests_factor))
            runs: dict[tuple[int, str], list[Result]] = {}
            for round_number in range(args.rounds):
                for concurrency in args.concurrency:
                    for target in targets:  # A, B, C, D, A, B, C, D ...
                        result = measure(target, requests, concurrency, args.client, args.seconds)
                        runs.setdefault((concurrency, target.system), []).append(result)
                        print(f"  {workload.name} c={concurrency} round {round_number + 1} {target.system}: "
                              f"{result.stats.rps:,.0f} req/s, p99 {result.stats.p99_ms:.1f} ms, "
                              f"{result.stats.errors} errors", flush=True)
            for (concurrency, system), results in runs.items():
                table.setdefault((workload.name, concurrency), {})[system] = median_result(results)
            for server in azml:
                server.stop()
                servers.remove(server)
            limits[workload.name] = in_process_limit(workload, scratch)
        meta = {"when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "rounds": args.rounds,
                "requests": args.requests if args.client == "python" else f"{args.seconds:g} s of wrk",
                "client": args.client, "gateway_args": " ".join(args.gateway_arg)}
        report = render(dict(sorted(table.items())), limits, meta)
        print(report)
        out = HERE / "results" / f"{datetime.now(UTC):%Y%m%d-%H%M%S}.md"
        out.write_text(report)
        print(f"written to {out.relative_to(ROOT)}")
        return 0
    finally:
        for server in servers:
            server.stop()
        if triton is not None:
            triton.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
