"""The HTTP listener's bounds (gateway/http_server.py), over a real socket: the real uvicorn server and app,
fake nodes behind it. Every case is bounded in time and talks to 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from gateway import http_server
from gateway.app import create_app
from tests.gateway.fakes import FakeProvider, settings_for
from turnout.triton.embedded import free_port

pytestmark = pytest.mark.anyio

HEALTH = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"


@asynccontextmanager
async def listening(tmp_path: Path, **changes: Any) -> AsyncIterator[int]:
    settings = settings_for(tmp_path, port=free_port(), **changes)
    server = uvicorn.Server(http_server.config(create_app(settings, FakeProvider()), settings, log_level="warning",
                                               lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "the server did not start"
            await asyncio.sleep(0.02)
        yield settings.port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def exchange(port: int, *parts: bytes, pause: float = 0.0, wait: float = 5.0) -> tuple[int, dict[str, Any], float]:
    """Send ``parts`` (``pause`` between them); the status and JSON body of the answer, and when it came."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        for part in parts:
            try:
                writer.write(part)
                await writer.drain()
            except ConnectionError:  # the server answered and closed before we were done
                break
            await asyncio.sleep(pause)
        raw = await asyncio.wait_for(reader.read(1 << 20), wait)
        while raw and b"\r\n\r\n" not in raw:
            raw += await asyncio.wait_for(reader.read(1 << 20), wait)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head else 0
    return status, (json.loads(body) if body.startswith(b"{") else {}), time.monotonic() - started


async def test_a_huge_header_is_refused_with_431_and_the_listener_keeps_serving(tmp_path: Path) -> None:
    async with listening(tmp_path, max_header_bytes=8192) as port:
        status, body, _ = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: g\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        assert status == 431 and body["error"]["code"] == "headers_too_large", body
        assert "8192 bytes" in body["error"]["message"]
        # Sent a little at a time, it is cut as soon as it passes the bound, not kept until it ends.
        status, body, _ = await exchange(port, b"GET /healthz HTTP/1.1\r\nX-Big: ", *[b"a" * 4096] * 8, pause=0.01)
        assert status == 431
        assert (await exchange(port, HEALTH))[0] == 200


async def test_too_many_header_fields_are_refused_with_431(tmp_path: Path) -> None:
    async with listening(tmp_path, max_header_count=20) as port:
        fields = b"".join(b"X-F%d: v\r\n" % i for i in range(30))
        status, body, _ = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: g\r\n" + fields + b"\r\n")
        assert status == 431 and "more than 20 header fields" in body["error"]["message"]


async def test_a_request_whose_headers_never_end_is_answered_408_at_the_header_timeout(tmp_path: Path) -> None:
    async with listening(tmp_path, header_timeout_seconds=0.5) as port:
        status, body, took = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: g\r\n")
        assert status == 408 and body["error"]["code"] == "request_timeout", body
        assert 0.4 < took < 3


async def test_a_stalled_body_is_answered_408_at_the_body_timeout(tmp_path: Path) -> None:
    async with listening(tmp_path, body_timeout_seconds=0.5, allow_anonymous=True) as port:
        head = b"POST /models/m/score HTTP/1.1\r\nHost: g\r\nContent-Length: 100\r\n\r\n"
        status, body, took = await exchange(port, head, b"{" * 10)
        assert status == 408 and "body" in body["error"]["message"], body
        assert 0.4 < took < 3
        # A slow body that keeps coming is not cut.
        status, _, _ = await exchange(port, b"POST /healthz HTTP/1.1\r\nHost: g\r\nContent-Length: 6\r\n\r\n",
                                      *[b"x"] * 6, pause=0.2)
        assert status == 405


async def test_a_flood_of_idle_connections_does_not_lock_out_a_caller(tmp_path: Path) -> None:
    async with listening(tmp_path, max_connections=32, header_timeout_seconds=60) as port:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(60)]
        for _, writer in idle[::2]:
            writer.write(b"GET /healthz HTTP/1.1\r\n")  # half-sent
        try:
            status, _, took = await exchange(port, HEALTH)
            assert status == 200 and took < 2
        finally:
            for _, writer in idle:
                writer.close()


async def test_an_idle_keep_alive_connection_is_closed(tmp_path: Path) -> None:
    async with listening(tmp_path, keep_alive_timeout_seconds=1) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HEALTH)
        await reader.readuntil(b"}}")  # the whole answer (its body ends with the nodes)
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        assert time.monotonic() - started < 3
        writer.close()


FLOODED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))
import uvicorn
from pathlib import Path
from gateway import http_server
from gateway.app import create_app
from tests.gateway.fakes import FakeProvider, settings_for
settings = settings_for(Path(sys.argv[1]), port=int(sys.argv[2]))
http_server.serve(create_app(settings, FakeProvider()), settings, log_level="warning")
"""


def test_under_a_small_open_files_limit_a_flood_of_idle_connections_does_not_lock_out_a_caller(
        tmp_path: Path) -> None:
    """The issue's attack: more idle connections than the gateway may open files. Plain uvicorn stops
    accepting (EMFILE) and every caller waits; here the longest-idle connections make room."""
    import socket
    import subprocess
    import sys

    import httpx

    from tests.conftest import ROOT

    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", FLOODED, str(tmp_path), str(port)], cwd=ROOT)
    flood: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        for _ in range(400):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # and never more
            flood.append(sock)
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert answer.status_code == 200
    finally:
        for sock in flood:
            sock.close()
        server.terminate()
        server.wait(timeout=20)
