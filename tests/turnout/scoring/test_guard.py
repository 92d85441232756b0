import threading
import time

import pytest

from turnout.errors import BadInput, ScoringTimeout, ScriptFailed
from turnout.scoring.guard import call_user, watchdog_span


def test_returns_the_value() -> None:
    assert call_user(lambda x: x + 1, 1, timeout=1, what="f") == 2


def test_times_out_even_when_the_script_catches_exception() -> None:
    def stubborn() -> None:
        try:
            time.sleep(5)
        except Exception:
            time.sleep(5)

    started = time.monotonic()
    with pytest.raises(ScoringTimeout, match="f did not finish within 0.2 s"):
        call_user(stubborn, timeout=0.2, what="f")
    assert time.monotonic() - started < 2


def test_times_out_off_the_main_thread() -> None:
    outcome = []

    def worker() -> None:
        try:
            call_user(time.sleep, 5, timeout=0.2, what="g")
        except ScoringTimeout as exc:
            outcome.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(3)
    assert outcome and isinstance(outcome[0], ScoringTimeout)


def test_failures_are_typed_and_keep_the_cause() -> None:
    def broken() -> None:
        raise KeyError("k")

    with pytest.raises(ScriptFailed) as failure:
        call_user(broken, timeout=1, what="run()")
    assert isinstance(failure.value.__cause__, KeyError)
    with pytest.raises(BadInput):
        call_user(lambda: (_ for _ in ()).throw(BadInput("no")), timeout=1, what="run()")


def test_calls_in_a_watchdog_span_keep_their_own_bound() -> None:
    with watchdog_span():
        assert [call_user(lambda i=i: i, timeout=1, what="quick") for i in range(50)] == list(range(50))
        started = time.monotonic()
        with pytest.raises(ScoringTimeout, match="slow did not finish within 0.2 s"):
            call_user(time.sleep, 5, timeout=0.2, what="slow")
        assert time.monotonic() - started < 1.0
        assert call_user(lambda: "after", timeout=1, what="after") == "after"
