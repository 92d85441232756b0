"""The HTTP listener: uvicorn's httptools protocol with the bounds a public listener needs.

uvicorn bounds neither the header block (a 32 MiB header was accepted and forwarded to scripts) nor the time a
client may take to send its request (800 half-sent requests stayed open indefinitely, and 1,100 idle
connections locked every caller out). Each connection here has:

* a header bound: at most ``max_header_bytes`` (request line + headers) and ``max_header_count`` fields, else
  ``431 headers_too_large``; bytes past the bound are never parsed nor kept;
* a header timeout: a request's line and headers must arrive within ``header_timeout_seconds`` of its first
  byte (a new connection: of its opening), else ``408 request_timeout`` (or a plain close if it sent nothing);
* a body timeout: no gap longer than ``body_timeout_seconds`` between two parts of a body, else ``408``;
* an idle keep-alive timeout (``keep_alive_timeout_seconds``, uvicorn's own);
* a connection bound per listener: at ``max_connections``, a new connection evicts the connection that has been
  idle (between requests, or still sending its headers) the longest, so a flood of idle connections cannot
  lock a caller out; if every connection is busy with a request, the new one is refused.

Timers are armed only when a request's headers or body do not arrive in one read: the common request (one
read) costs no timer at all.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.settings import GatewaySettings
from turnout.errors import HeadersTooLarge, RequestTimeout, TurnoutError

log = logging.getLogger("turnout.gateway.http")

# File descriptors kept back from the connection bound: Triton connections, the state database, logs.
RESERVED_DESCRIPTORS = 256

# How long a refused connection's input is still read and dropped, so the refusal reaches the client.
LINGER_SECONDS = 1.0

_IDLE, _HEADERS, _BODY, _APP = range(4)


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int
    max_header_count: int
    header_timeout: float
    body_timeout: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> Limits:
        return cls(settings.max_header_bytes, settings.max_header_count, settings.header_timeout_seconds,
                   settings.body_timeout_seconds, connection_bound(settings.max_connections))


def connection_bound(wanted: int) -> int:
    """Raise the soft open-files limit to the hard one (the default 1,024 is the first thing a flood
    exhausts), and keep the connection bound below it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, soft - min(RESERVED_DESCRIPTORS, soft // 4)))


def _answer(error: TurnoutError) -> bytes:
    body = orjson.dumps(error.to_dict())
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (int(error.status), error.status.phrase.encode(), len(body))) + body


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, limits: Limits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._phase = _IDLE
        self._received = 0  # bytes of the current request's line and headers
        self._fields = 0
        self._started = 0.0  # when the current phase began (for eviction and the timers)
        self._progress = 0.0  # when a part of the body last arrived
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False

    # --- connection ---
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections and not self._evict_one():
            log.warning("%d connections open, all busy: refusing a new one", len(self.connections))
            transport.abort()
            return
        super().connection_made(transport)
        self._started = self.loop.time()
        self._arm(self.limits.header_timeout)

    def _evict_one(self) -> bool:
        idle = [c for c in self.connections if isinstance(c, BoundedHttpToolsProtocol) and c._phase in (_IDLE, _HEADERS)
                and c.transport is not None and not c.transport.is_closing()]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c._started)
        log.info("connection bound (%d) reached: closing the longest-idle connection", self.limits.max_connections)
        oldest.transport.close()
        self.connections.discard(oldest)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.transport is None:  # refused in connection_made
            return
        super().connection_lost(exc)

    # --- reading ---
    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._phase in (_IDLE, _HEADERS):
            self._received += len(data)
        super().data_received(data)
        if self._refused:
            return
        if self._phase == _HEADERS and self._received > self.limits.max_header_bytes:
            self._refuse(HeadersTooLarge(f"the request's headers exceed {self.limits.max_header_bytes} bytes"))
        elif self._phase == _HEADERS and self._timer is None:
            self._started = self.loop.time()
            self._arm(self.limits.header_timeout)
        elif self._phase == _BODY:
            self._progress = self.loop.time()
            if self._timer is None:
                self._arm(self.limits.body_timeout)
        elif self._phase in (_IDLE, _APP):
            self._disarm()

    def on_message_begin(self) -> None:
        self._phase, self._fields = _HEADERS, 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if not self._refused:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused:
            return
        self._fields += 1
        if self._fields > self.limits.max_header_count:
            self._refuse(HeadersTooLarge(f"the request has more than {self.limits.max_header_count} header fields"))
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        # One read may hold a whole oversized header block: measure what was parsed.
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.limits.max_header_bytes:
            self._refuse(HeadersTooLarge(f"the request's headers exceed {self.limits.max_header_bytes} bytes"))
            return
        self._phase, self._received = _BODY, 0
        self._disarm()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._phase = _APP
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self._phase == _APP:
            self._phase, self._started = _IDLE, self.loop.time()
        super().on_response_complete()

    # --- bounds ---
    def _refuse(self, error: TurnoutError) -> None:
        self._refused = True
        self._disarm()
        log.warning("refused a request from %s: %s", self.client, error.message)
        if not self.transport.is_closing():
            self.transport.write(_answer(error))
            # A close with unread input sends a reset, which can destroy the answer before the client reads
            # it: end our side, read (and drop) what still comes for a moment, then close.
            if self.transport.can_write_eof():
                self.transport.write_eof()
                self.loop.call_later(LINGER_SECONDS, self.transport.close)
            else:
                self.transport.close()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self.transport is None or self.transport.is_closing():
            return
        now = self.loop.time()
        if self._phase == _BODY:
            left = self._progress + self.limits.body_timeout - now
            if left > 0:  # the body is still coming: check again when its gap could run out
                self._timer = self.loop.call_later(left, self._expire)
                return
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True  # the app's receive() answers http.disconnect
            self._refuse(RequestTimeout(f"no part of the request's body arrived for {self.limits.body_timeout:g} s"))
        elif self._phase == _HEADERS:
            self._refuse(RequestTimeout(f"the request's headers did not arrive within {self.limits.header_timeout:g} s"))
        elif self._phase == _IDLE:
            self.transport.close()  # opened and never used within the header timeout


def config(app: Any, settings: GatewaySettings, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration with the bounded protocol and the settings' timeouts."""
    protocol = functools.partial(BoundedHttpToolsProtocol, limits=Limits.from_settings(settings))
    return uvicorn.Config(app, host=settings.host, port=settings.port, http=protocol,  # type: ignore[arg-type]
                          timeout_keep_alive=settings.keep_alive_timeout_seconds,
                          h11_max_incomplete_event_size=settings.max_header_bytes, **options)


def serve(app: Any, settings: GatewaySettings, **options: Any) -> None:
    uvicorn.Server(config(app, settings, **options)).run()
