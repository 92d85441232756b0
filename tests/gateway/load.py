"""A bounded closed-loop load generator on loopback, for "zero failed requests" tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx


@dataclass
class Outcome:
    status: int
    served_by: str
    body: bytes


@dataclass
class LoadLoop:
    """``clients`` threads POST ``body`` to ``url`` until ``stop()`` and at least ``minimum`` requests,
    or ``limit_seconds`` (whichever ends it first). Never more than ``maximum`` requests."""

    url: str
    body: bytes
    headers: dict[str, str]
    served_header: str
    clients: int = 4
    minimum: int = 2000
    maximum: int = 50_000
    limit_seconds: float = 90.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit_seconds
        with httpx.Client(headers=self.headers, timeout=30) as client:
            while time.monotonic() < deadline:
                with self._lock:
                    count = len(self.outcomes)
                if count >= self.maximum or (self._stop.is_set() and count >= self.minimum):
                    return
                try:
                    response = client.post(self.url, content=self.body)
                    outcome = Outcome(response.status_code, response.headers.get(self.served_header, ""),
                                      response.content)
                except httpx.HTTPError as exc:
                    outcome = Outcome(0, "", repr(exc).encode())
                with self._lock:
                    self.outcomes.append(outcome)

    def start(self) -> LoadLoop:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def wait_for(self, condition: Callable[[list[Outcome]], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                snapshot = list(self.outcomes)
            if condition(snapshot):
                return
            time.sleep(0.05)
        raise AssertionError(f"condition not met within {timeout}s after {len(snapshot)} requests")

    def finish(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.limit_seconds + 30)
        return self.outcomes

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != 200]
