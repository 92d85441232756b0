"""Every call into user code goes through :func:`call_user`: timed, bounded, its failure typed."""

from __future__ import annotations

import contextlib
import logging
import signal
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


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def _expire(signum: int, frame: object) -> None:
        raise _Deadline()

    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
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
