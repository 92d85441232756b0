"""The per-deployment environment figures of docs/environments.md.

    python -m benchmarks.environments            # prints a table

* a cold build of a small spec (two pure-Python packages), with uv's download cache empty and warm;
* what a cached environment adds to ``packager build`` (the same package with and without requirements);
* uv against pip for the same spec (a venv and the same two packages), cold and warm caches;
* the stub's memory (PSS) in its own environment against the serving one, on a real embedded Triton.

Packages come from the registries this machine reaches; nothing leaves 127.0.0.1 otherwise.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from packager.environments import EnvironmentSpec, prepare, uv_binary
from turnout.triton.client import TritonClient
from turnout.triton.embedded import EmbeddedTriton
from turnout.triton.processes import stub_memory

SPEC = "tabulate==0.9.0\nsix==1.16.0\n"
BIN = Path(sys.executable).parent
ROUNDS = 3


def _timed(function: object, *args: object, **kwargs: object) -> float:
    started = time.perf_counter()
    function(*args, **kwargs)  # type: ignore[operator]
    return time.perf_counter() - started


def _spec(root: Path) -> EnvironmentSpec:
    folder = root / "environment"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "requirements.txt").write_text(SPEC)
    spec = EnvironmentSpec.of(folder)
    assert spec is not None
    return spec


def builds(work: Path) -> list[tuple[str, float]]:
    rows = []
    cold = []
    for n in range(ROUNDS):
        os.environ["UV_CACHE_DIR"] = str(work / f"uv-cache-cold-{n}")
        cold.append(_timed(prepare, _spec(work / f"s{n}"), work / f"cold-{n}"))
    os.environ.pop("UV_CACHE_DIR")
    rows.append(("cold build, empty uv cache (download + resolve + install)", statistics.median(cold)))
    warm = [_timed(prepare, _spec(work / f"w{n}"), work / f"warm-{n}") for n in range(ROUNDS)]
    rows.append(("cold build, warm uv cache", statistics.median(warm)))
    cached = [_timed(prepare, _spec(work / f"c{n}"), work / "warm-0") for n in range(ROUNDS)]
    rows.append(("cached environment found (same spec)", statistics.median(cached)))
    return rows


def _package(root: Path, requirements: str | None) -> Path:
    root.mkdir(parents=True)
    (root / "score.py").write_text("def init():\n    pass\n\ndef run(raw):\n    return raw\n")
    if requirements:
        (root / "requirements.txt").write_text(requirements)
    return root


def build_overhead(work: Path) -> list[tuple[str, float]]:
    plain, own = _package(work / "plain", None), _package(work / "own", SPEC)
    env = {**os.environ, "TURNOUT_ENVIRONMENTS_DIR": str(work / "build-cache")}

    def build(folder: Path, n: int) -> float:
        started = time.perf_counter()
        subprocess.run([str(BIN / "packager"), "build", str(folder), "-r", str(work / f"repo-{folder.name}-{n}")],
                       check=True, capture_output=True, env=env)
        return time.perf_counter() - started

    build(own, 99)  # fills the cache
    plain_times = [build(plain, n) for n in range(ROUNDS)]
    own_times = [build(own, n) for n in range(ROUNDS)]
    return [("packager build, no environment", statistics.median(plain_times)),
            ("packager build, cached environment", statistics.median(own_times)),
            ("  what the cached environment adds", statistics.median(own_times) - statistics.median(plain_times))]


def uv_against_pip(work: Path) -> list[tuple[str, float]]:
    (work / "req.txt").write_text(SPEC)
    uv = uv_binary()

    def with_uv(n: int, cache: Path | None) -> float:
        venv = work / f"uv-venv-{n}-{cache is None}"
        env = {**os.environ, **({"UV_CACHE_DIR": str(cache)} if cache else {})}
        started = time.perf_counter()
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True, env=env)
        subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-r",
                        str(work / "req.txt")], check=True, env=env)
        return time.perf_counter() - started

    def with_pip(n: int, cache: Path | None) -> float:
        venv = work / f"pip-venv-{n}-{cache is None}"
        env = {**os.environ, **({"PIP_CACHE_DIR": str(cache)} if cache else {})}
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "-r",
                        str(work / "req.txt")], check=True, env=env, stderr=subprocess.DEVNULL)
        return time.perf_counter() - started

    rows = []
    for label, tool in (("uv", with_uv), ("pip", with_pip)):
        cold = statistics.median(tool(n, work / f"{label}-cache-{n}") for n in range(ROUNDS))
        warm = statistics.median(tool(n, None) for n in range(ROUNDS))
        rows += [(f"{label}: venv + install, empty cache", cold), (f"{label}: venv + install, warm cache", warm)]
    return rows


SCRIPT = """
import numpy

def init():
    pass

def run(raw):
    return {"ok": True}
"""


def stub_memories(work: Path) -> list[tuple[str, float]]:
    from packager import pipeline
    from packager.sources import resolve_source

    repository = work / "triton-repository"
    entries = {}
    for name, requirements in (("serving", None), ("own", SPEC)):
        folder = work / f"mem-{name}"
        folder.mkdir()
        (folder / "score.py").write_text(textwrap.dedent(SCRIPT))
        if requirements:
            (folder / "requirements.txt").write_text(requirements)
        with resolve_source(str(folder)) as staged:
            entries[name] = pipeline.build(staged, repository, entry=f"mem-{name}",
                                           environment=pipeline.EnvironmentOptions(work / "mem-envs")).name
    rows = []
    with EmbeddedTriton(repository=repository, work_dir=work / "triton") as triton, \
            TritonClient(triton.http_url) as client:
        for entry in entries.values():
            client.load(entry)
            client.score(entry, b"{}")
        time.sleep(1.0)
        assert triton.pid is not None
        memory = stub_memory(triton.pid)
        for name, entry in entries.items():
            rows.append((f"stub PSS, {name} environment (MiB)", sum(memory.get(entry, [0])) / 1024 / 1024))
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="turnout-bench-env-") as tmp:
        work = Path(tmp)
        rows = builds(work) + build_overhead(work) + uv_against_pip(work) + stub_memories(work)
    print(f"{'measure (median of ' + str(ROUNDS) + ')':<62} {'value':>9}")
    for label, value in rows:
        unit = "" if "MiB" in label else " s"
        print(f"{label:<62} {value:>7.2f}{unit}")


if __name__ == "__main__":
    main()
