"""The hostile-client figures of docs/reliability.md, measured against a real ``gateway serve`` (embedded Triton).

    python -m benchmarks.hostile            # prints a table

Everything goes to 127.0.0.1; every loop is bounded. The gateway runs with the open-files limit of a default
Linux account (1,024), as in the attack it answers.
"""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from turnout.triton.embedded import free_ports

BIN = Path(sys.executable).parent


def _rss(pid: int) -> int:
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1]) * 1024
    return total


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


_client = httpx.Client(timeout=30)


def _health_ms(url: str) -> float:
    started = time.perf_counter()
    _client.get(f"{url}/healthz")
    return (time.perf_counter() - started) * 1e3


def main() -> None:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="turnout-hostile-") as tmp:
        port, grpc_port = free_ports(2)
        url = f"http://127.0.0.1:{port}"
        gateway = subprocess.Popen(
            [str(BIN / "gateway"), "serve", "--repository", f"{tmp}/repo", "--state", f"{tmp}/state",
             "--port", str(port), "--grpc-port", str(grpc_port), "--log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_limit)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            rows.append(("/healthz, idle", f"{_health_ms(url):.1f} ms"))

            # 1. A 64 MiB header, unauthenticated, while /healthz is asked.
            before = _rss(gateway.pid)
            answer: list[str] = []

            def send_big() -> None:
                with socket.create_connection(("127.0.0.1", port)) as sock:
                    sock.settimeout(30)
                    started = time.perf_counter()
                    try:
                        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: g\r\nX-Big: ")
                        chunk = b"a" * (1 << 20)
                        for _ in range(64):
                            sock.sendall(chunk)
                    except OSError:
                        pass
                    try:
                        head = sock.recv(200).split(b"\r\n")[0].decode()
                    except OSError as exc:
                        head = f"({exc})"
                    answer.append(f"{head} after {(time.perf_counter() - started) * 1e3:.0f} ms")

            sender = threading.Thread(target=send_big)
            sender.start()
            during = max(_health_ms(url) for _ in range(5))
            sender.join(60)
            rows.append(("64 MiB header: answer", answer[0] if answer else "none"))
            rows.append(("64 MiB header: slowest /healthz meanwhile", f"{during:.1f} ms"))
            rows.append(("64 MiB header: gateway RSS growth", f"{(_rss(gateway.pid) - before) / 1024**2:+.1f} MiB"))

            # 2. 1,100 half-open connections (more than the 1,024 open files), then a caller.
            flood: list[socket.socket] = []
            refused = 0
            for _ in range(1100):
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                    sock.sendall(b"GET /healthz HTTP/1.1\r\n")
                    flood.append(sock)
                except OSError:
                    refused += 1
            started = time.perf_counter()
            try:
                status = httpx.get(f"{url}/healthz", timeout=10).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__  # type: ignore[assignment]
            rows.append(("1,100 half-open connections, then a caller",
                         f"{status} in {(time.perf_counter() - started) * 1e3:.0f} ms"))

            # 3. How long half-sent requests stay open (the header timeout).
            started = time.perf_counter()
            open_ones = flood[-800:]
            closed_at: list[float] = []
            for sock in open_ones:
                sock.settimeout(max(0.1, 30 - (time.perf_counter() - started)))
                try:
                    sock.recv(1024)
                except OSError:
                    pass
                closed_at.append(time.perf_counter() - started)
            rows.append(("800 half-sent requests: all closed after", f"{max(closed_at):.1f} s"))
            for sock in flood:
                sock.close()
        finally:
            stopping = time.perf_counter()
            gateway.terminate()
            gateway.wait(60)
            rows.append(("gateway SIGTERM to exit", f"{time.perf_counter() - stopping:.1f} s"))
    width = max(len(k) for k, _ in rows)
    print(f"| {'measure'.ljust(width)} | figure |\n|{'-' * (width + 2)}|---|")
    for key, value in rows:
        print(f"| {key.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()
