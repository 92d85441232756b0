"""Keeps an :class:`EmbeddedTriton` alive: notices its death, reaps what it left, restarts it with backoff.

One thread watches the server and does every restart itself: Triton is told to stop when the thread that
started it ends (``PR_SET_PDEATHSIG``), and this thread lives exactly as long as the supervision. The
callbacks run on that thread; the gateway hands them to its event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from turnout.errors import TurnoutError
from turnout.triton.embedded import EmbeddedTriton

log = logging.getLogger("turnout.triton.supervisor")

# How often the server's exit is checked: a waitpid(WNOHANG), nothing more.
POLL_SECONDS = 0.1


@dataclass
class SupervisorStatus:
    state: str = "running"  # running | restarting | failed
    restarts: int = 0
    last_exit_code: int | None = None
    last_recovery_seconds: float | None = None  # from the death being noticed to the server live again
    reaped_processes: int = 0  # orphaned stubs killed over the supervisor's life
    message: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"state": self.state, "restarts": self.restarts, "last_exit_code": self.last_exit_code,
                "last_recovery_seconds": self.last_recovery_seconds, "reaped_processes": self.reaped_processes,
                "message": self.message}


@dataclass
class Supervisor:
    triton: EmbeddedTriton
    on_down: Callable[[], None] = lambda: None
    on_up: Callable[[], None] = lambda: None
    first_backoff: float = 0.5
    max_backoff: float = 30.0
    status: SupervisorStatus = field(default_factory=SupervisorStatus)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="turnout-triton-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop supervising, then stop the server (blocking)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
        self.triton.stop()

    def _watch(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            code = self.triton.exit_code()
            if code is not None:
                self._recover(code)

    def _recover(self, code: int) -> None:
        noticed = time.monotonic()
        leftovers = self.triton.reap()
        self.status.last_exit_code = code
        self.status.reaped_processes += len(leftovers)
        self.status.state = "restarting"
        self.status.message = f"tritonserver exited with {code}; restarting it"
        log.error("tritonserver exited with %s; killed %d process(es) it left behind; restarting it",
                  code, len(leftovers))
        self.on_down()
        backoff = self.first_backoff
        while not self._stop.is_set():
            try:
                self.triton.restart()
            except TurnoutError as exc:
                self.triton.reap()
                self.status.state = "failed"
                self.status.message = f"tritonserver does not start again ({exc.message.splitlines()[0]}); " \
                                      f"next attempt in {backoff:g} s"
                log.error("%s", self.status.message)
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, self.max_backoff)
                continue
            self.status.restarts += 1
            self.status.last_recovery_seconds = round(time.monotonic() - noticed, 3)
            self.status.state, self.status.message = "running", ""
            log.warning("tritonserver is live again after %.2f s (restart %d)", self.status.last_recovery_seconds,
                        self.status.restarts)
            self.on_up()
            return
