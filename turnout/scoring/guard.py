"""Every call into user code goes through :func:`call_user`: timed, bounded, its failure typed."""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from turnout.errors import ScoringTimeout, ScriptFailed, TurnoutError

log = logging.getLogger("turnout.scoring")
T = TypeVar("T")


class _Deadline(BaseException):
    """Raised into the script by SIGALRM. A BaseException, so a script's ``except Exception`` cannot
    swallow it and keep running past its bound."""


# How long past its bound a call that Python cannot interrupt may run before the process ends itself.
HARD_DEADLINE_GRACE = 1.0
# Where the watchdog writes the stuck call's stack: the entry's own log once the backend has opened it.
deadline_log: Any = None


class _Span:
    """The hard deadline shared by the calls of one :func:`watchdog_span`: armed for twice a call's bound
    and re-armed once a bound has passed since, so each call still gets at least its bound plus the grace
    before the process is ended (and at most twice that), without a watchdog thread started per call."""

    active = False
    armed_at = 0.0
    bound = 0.0


def _arm(seconds: float) -> None:
    faulthandler.dump_traceback_later(seconds, exit=True, file=deadline_log or sys.__stderr__ or sys.stderr)


@contextlib.contextmanager
def watchdog_span() -> Iterator[None]:
    """Around many quick calls (a batch job's mini-batches in one request): one watchdog for all of them."""
    _Span.active, _Span.armed_at, _Span.bound = True, 0.0, 0.0
    try:
        yield
    finally:
        _Span.active = False
        faulthandler.cancel_dump_traceback_later()


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """SIGALRM raises into the script at its bound; but Python runs a signal handler only between bytecodes,
    so a long C call (a native library, ``ctypes``) would run on, blocking the instance. For that, a watchdog
    thread of faulthandler's own, which needs no GIL, dumps where the script is stuck and ends the process
    ``HARD_DEADLINE_GRACE`` later: Triton fails its requests, the gateway answers 504 and restarts it."""

    def _expire(signum: int, frame: object) -> None:
        raise _Deadline()

    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    if not _Span.active:
        _arm(seconds + HARD_DEADLINE_GRACE)
    elif _Span.bound < seconds or time.monotonic() - _Span.armed_at > _Span.bound:
        _arm(2 * seconds + HARD_DEADLINE_GRACE)
        _Span.armed_at, _Span.bound = time.monotonic(), seconds
    try:
        yield
    finally:
        if not _Span.active:
            faulthandler.cancel_dump_traceback_later()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _in_thread(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], seconds: float) -> T:
    """Off the main thread signals cannot interrupt: wait on a worker instead. A late worker keeps
    running (Python cannot stop a thread) but its caller gets the timeout on time."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="turnout-user-call", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise _Deadline()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def call_user(
    fn: Callable[..., T],
    *args: Any,
    timeout: float,
    what: str,
    **kwargs: Any,
) -> T:
    """Call ``fn`` (a function of the user's script) within ``timeout`` seconds.

    Raises :class:`ScoringTimeout` when it runs too long, lets a deliberate :class:`TurnoutError` (such as
    ``BadInput``) through, and wraps anything else in :class:`ScriptFailed` keeping the cause."""
    started = time.perf_counter()
    try:
        if threading.current_thread() is threading.main_thread():
            with _alarm(timeout):
                return fn(*args, **kwargs)
        return _in_thread(fn, args, kwargs, timeout)
    except _Deadline:
        raise ScoringTimeout(f"{what} did not finish within {timeout:g} s") from None
    except TurnoutError:
        raise
    except (Exception, SystemExit) as exc:  # sys.exit() in a script must not end the process
        raise ScriptFailed(f"{what} raised {type(exc).__name__}: {exc}") from exc
    finally:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s took %.3f ms", what, (time.perf_counter() - started) * 1e3)
