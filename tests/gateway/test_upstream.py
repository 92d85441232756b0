"""The hot path's own pieces, without Triton: path matching, the binary codec, the lean HTTP pool."""

from __future__ import annotations

import asyncio
import struct

import orjson
import pytest

from gateway.rest.fastpath import ScoreTarget, match_score_path
from gateway.upstream import UpstreamPool
from turnout.errors import NodeUnreachable, ScoringTimeout
from turnout.wire import decode_batch, encode_request, only


def test_score_paths() -> None:
    assert match_score_path("/models/m/score") == ScoreTarget("model", "m")
    assert match_score_path("/models/m/versions/3/score") == ScoreTarget("model", "m", 3)
    assert match_score_path("/endpoints/e/score") == ScoreTarget("endpoint", "e")
    for other in ("/models/m", "/endpoints/e/versions/1/score", "/models/m/versions/x/score", "/v2/models/m/infer"):
        assert match_score_path(other) is None


def test_binary_request_and_response_round_trip() -> None:
    payload, header_length = encode_request(b'{"a": 1}', b"{}")
    header = orjson.loads(payload[:header_length])
    assert [i["parameters"]["binary_data_size"] for i in header["inputs"]] == [12, 6]
    assert payload[header_length:] == struct.pack("<I", 8) + b'{"a": 1}' + struct.pack("<I", 2) + b"{}"
    meta = b'{"status": 201, "content_type": "text/plain", "headers": {"x": "1"}}'
    answer_header = orjson.dumps({"outputs": [
        {"name": "BODY", "parameters": {"binary_data_size": 7}},
        {"name": "META", "parameters": {"binary_data_size": len(meta) + 4}},
    ]})
    answer = answer_header + struct.pack("<I", 3) + b"abc" + struct.pack("<I", len(meta)) + meta
    result = only(decode_batch(answer, len(answer_header), 1))
    assert (result.body, result.status, result.content_type, result.headers) == (b"abc", 201, "text/plain", {"x": "1"})


async def _serve(handler) -> tuple[asyncio.AbstractServer, int]:  # type: ignore[no-untyped-def]
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    return await reader.readexactly(length)


def test_pool_reuses_connections_and_survives_a_node_closing_idle_ones() -> None:
    async def scenario() -> None:
        connections = 0

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            body = await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Seen: yes\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            try:  # keep the connection for a second request, then close it as if idle too long
                body = await asyncio.wait_for(_read_request(reader), 0.2)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
            except (TimeoutError, asyncio.IncompleteReadError):
                pass
            writer.close()

        server, port = await _serve(handler)
        pool = UpstreamPool("127.0.0.1", port, timeout=5)
        assert await pool.post(b"/a", b"", b"one") == (200, {b"content-length": b"3", b"x-seen": b"yes"}, b"one")
        assert (await pool.post(b"/a", b"", b"two"))[2] == b"two"
        assert connections == 1
        await asyncio.sleep(0.5)  # the node closed the idle connection
        assert (await pool.post(b"/a", b"", b"three"))[2] == b"three"
        assert connections == 2
        pool.close()
        server.close()

    asyncio.run(scenario())


def test_pool_errors_are_typed() -> None:
    async def scenario() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(5)

        server, port = await _serve(silent)
        with pytest.raises(ScoringTimeout):
            await UpstreamPool("127.0.0.1", port, timeout=0.2).post(b"/", b"", b"x")
        server.close()
        await server.wait_closed()
        with pytest.raises(NodeUnreachable):
            await UpstreamPool("127.0.0.1", port, timeout=1).post(b"/", b"", b"x")

    asyncio.run(scenario())


def test_a_caller_that_gives_up_closes_its_connection() -> None:
    """Its answer would otherwise arrive later on a connection nobody reads (a leaked socket)."""
    async def scenario() -> None:
        closed = asyncio.Event()

        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _read_request(reader)
            if await reader.read() == b"":  # EOF: the gateway closed its side
                closed.set()

        server, port = await _serve(slow)
        pool = UpstreamPool("127.0.0.1", port, timeout=5)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.post(b"/", b"", b"x"), 0.1)
        await asyncio.wait_for(closed.wait(), 2)
        server.close()

    asyncio.run(scenario())
