"""The benchmark harness measures what it says: bounded runs, loopback only, CPU of a process tree."""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from benchmarks.loadgen import run_load
from benchmarks.procstats import tree_cpu_seconds


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        status = 500 if self.path == "/fail" else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def test_load_is_bounded_and_counts_errors() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        stats = run_load(f"{url}/ok", b"{}", {}, requests=60, concurrency=4)
        assert (stats.requests, stats.errors) == (60, 0)
        assert stats.rps > 0 and stats.p50_ms <= stats.p99_ms
        failing = run_load(f"{url}/fail", b"{}", {}, requests=10, concurrency=2)
        assert failing.errors == 10
    finally:
        server.shutdown()


def test_traffic_never_leaves_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        run_load("http://192.0.2.1:80/score", b"{}", {}, requests=1, concurrency=1)


def test_process_tree_cpu_grows_with_work() -> None:
    before = tree_cpu_seconds([os.getpid()])
    sum(i * i for i in range(2_000_000))
    assert tree_cpu_seconds([os.getpid()]) > before
