"""A lean pooled HTTP/1.1 client for the one request the hot path sends: POST an inference to Triton.

General clients spend most of the gateway's CPU on machinery this call does not need (profiled: aiohttp
was half of the event loop's time). Here a request is one ``write`` of prebuilt bytes on a kept-alive
connection and the answer is parsed by httptools (C). Control calls keep using aiohttp.
"""

from __future__ import annotations

import asyncio
from collections import deque

import httptools

from turnout.errors import NodeUnreachable, ScoringTimeout

Answer = tuple[int, dict[bytes, bytes], bytes]


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.closed = False
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("connection closed by the node"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), self._headers, b"".join(self._body)))

    def _fail(self, exc: BaseException) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def send(self, request: bytes) -> asyncio.Future[Answer]:
        self._headers, self._body = {}, []
        self.waiter = asyncio.get_running_loop().create_future()
        if self.transport is None or self.closed:
            self.waiter.set_exception(ConnectionResetError("connection closed"))
        else:
            self.transport.write(request)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[Answer]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class UpstreamPool:
    """Kept-alive connections to one node, reused most-recent first."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._idle: deque[_Connection] = deque()
        self._host_header = f"{host}:{port}".encode()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Connection, self.host, self.port)
        return connection

    def _request(self, path: bytes, headers: bytes, body: bytes) -> bytes:
        return b"".join((b"POST ", path, b" HTTP/1.1\r\nHost: ", self._host_header, b"\r\n", headers,
                         b"Content-Length: ", str(len(body)).encode(), b"\r\n\r\n", body))

    async def post(self, path: bytes, headers: bytes, body: bytes) -> Answer:
        """``headers``: extra header lines, each ending in CRLF. Retries once on a stale kept-alive
        connection (closed by the node while idle), never after the request could have been processed."""
        request = self._request(path, headers, body)
        for attempt in (0, 1):
            reused = bool(self._idle)
            try:
                connection = self._idle.pop() if reused else await self._connect()
            except OSError as exc:  # nothing was sent: another node may take it
                raise NodeUnreachable(f"cannot connect to {self.host}:{self.port}: {exc}",
                                      details={"not_sent": True}) from exc
            if connection.closed:
                continue
            waiter = connection.send(request)
            # A plain timer, not asyncio.timeout(): that one cancels and uncancels the task, which
            # profiled at several percent of the gateway's loop on this one-call path.
            timer = asyncio.get_running_loop().call_later(self.timeout, _expire, waiter)
            try:
                answer = await waiter
            except TimeoutError:
                connection.close()
                raise ScoringTimeout(f"{self.host}:{self.port} did not answer within {self.timeout:g} s") from None
            except (ConnectionError, httptools.HttpParserError) as exc:
                connection.close()
                if reused and attempt == 0 and isinstance(exc, ConnectionResetError):
                    continue
                raise NodeUnreachable(f"{self.host}:{self.port} dropped the connection: {exc}") from exc
            except BaseException:  # the caller gave up (cancelled): nobody will read this connection again
                connection.close()
                raise
            finally:
                timer.cancel()
            if not connection.closed:
                self._idle.append(connection)
            return answer
        raise NodeUnreachable(f"{self.host}:{self.port} keeps closing connections")

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
