"""A bounded closed-loop HTTP load generator (asyncio + aiohttp), loopback only.

``concurrency`` workers each send a request, wait for the answer, and send the next, until ``requests``
answers have come back (or ``time_limit`` passes). It reports its own CPU time, since on 2 cores the
client competes with the servers it measures."""

from __future__ import annotations

import asyncio
import re
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import aiohttp

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class RunStats:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    client_cpu_s: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _run(url: str, body: bytes, headers: dict[str, str], requests: int, concurrency: int,
               time_limit: float) -> RunStats:
    if urlparse(url).hostname not in LOOPBACK:
        raise ValueError(f"benchmarks only send traffic to loopback addresses, not {url}")
    latencies: list[float] = []
    errors = 0
    remaining = requests
    deadline = time.monotonic() + time_limit
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, headers={"Accept-Encoding": "identity"}) as session:
        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                errors += 0 if ok else 1

        async def warm() -> None:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()

        # Warm-up: open the connections and wake the server before the clock starts.
        await asyncio.gather(*(warm() for _ in range(concurrency)))
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return RunStats(len(latencies), errors, seconds, _percentile(latencies, 0.5) * 1e3,
                    _percentile(latencies, 0.99) * 1e3, client_cpu)


def run_load(url: str, body: bytes, headers: dict[str, str], requests: int, concurrency: int,
             time_limit: float = 120.0) -> RunStats:
    return asyncio.run(_run(url, body, headers, requests, concurrency, time_limit))


def run_wrk(url: str, body: bytes, headers: dict[str, str], seconds: float, concurrency: int) -> RunStats:
    """The same measurement with wrk (Debian's, C, one thread): bounded by time rather than count, and
    far cheaper per request than the Python client, so servers keep more of the machine."""
    if urlparse(url).hostname not in LOOPBACK:
        raise ValueError(f"benchmarks only send traffic to loopback addresses, not {url}")
    with tempfile.TemporaryDirectory(prefix="turnout-wrk-") as tmp:
        (Path(tmp) / "body.bin").write_bytes(body)
        lines = ['wrk.method = "POST"', f'local f = io.open("{Path(tmp) / "body.bin"}", "rb")',
                 "wrk.body = f:read('*all')", "f:close()"]
        lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
        (Path(tmp) / "post.lua").write_text("\n".join(lines) + "\n")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        # --timeout: a slow answer is not an error (wrk gives up after 2 s by default; the gateway after 120 s).
        out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "--timeout", "60s",
                              "-s", str(Path(tmp) / "post.lua"), url], capture_output=True, text=True, check=True).stdout
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    elapsed = _duration(re.search(r"requests in ([\d.]+\w+),", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    p50 = _duration(re.search(r"50%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    p99 = _duration(re.search(r"99%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return RunStats(total, errors, elapsed, p50 * 1e3, p99 * 1e3, cpu)


def _duration(text: str) -> float:
    """wrk's '12.5ms', '1.2s', '800us', '2.0m' in seconds."""
    number, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]
