"""The broken-script corpus on the real Triton: every failure is contained and answers exactly as
documented, while a healthy entry in the same server keeps answering."""

from __future__ import annotations

import pytest

from tests.conftest import FIXTURES, Serving
from turnout.errors import BadInput, ScoringTimeout, ScriptFailed, ScriptLoadError

pytestmark = pytest.mark.integration

BROKEN = FIXTURES / "broken"
HEALTHY = """
def init():
    pass

def run(raw_data):
    return {"echo": raw_data}
"""


@pytest.fixture(scope="module")
def healthy(serving: Serving, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("healthy")
    (folder / "score.py").write_text(HEALTHY)
    return serving.deploy(folder)


def assert_healthy(serving: Serving, entry: str) -> None:
    result = serving.client.score(entry, b'{"still": "here"}')
    assert result.status == 200
    assert result.body == b'{"echo":"{\\"still\\": \\"here\\"}"}'


@pytest.mark.parametrize(
    ("case", "phase", "reason"),
    [
        ("syntax_error", "import failed", "SyntaxError"),
        ("import_error", "import failed", "ModuleNotFoundError: No module named 'turnout_no_such_package_anywhere'"),
        ("missing_run", "defines neither run()", "preprocess()/predict()/postprocess()"),
        ("init_raises", "init() failed", "RuntimeError: boom in init"),
    ],
)
def test_script_that_cannot_load_fails_its_entry_only(
    serving: Serving, healthy: str, case: str, phase: str, reason: str
) -> None:
    entry = serving.deploy(BROKEN / case, load=False)
    with pytest.raises(ScriptLoadError) as failure:
        serving.client.load(entry)
    message = failure.value.message
    assert "score.py" in message, message
    assert phase in message, message
    assert reason in message, message
    assert not serving.client.is_ready(entry)
    assert_healthy(serving, healthy)


@pytest.mark.parametrize(
    ("case", "error", "status", "message"),
    [
        ("run_raises", ScriptFailed, 500, "run() in score.py raised ValueError"),
        ("not_serialisable", ScriptFailed, 500, "not JSON-serialisable"),
        ("sleeps", ScoringTimeout, 504, "run() in score.py did not finish within 0.5 s"),
        ("bad_input", BadInput, 400, "the request needs a 'data' field"),
        ("sys_exit", ScriptFailed, 500, "run() in score.py raised SystemExit"),
    ],
)
def test_request_failure_fails_that_request_only(
    serving: Serving, healthy: str, case: str, error: type, status: int, message: str
) -> None:
    entry = serving.deploy(BROKEN / case)
    with pytest.raises(error) as failure:
        serving.client.score(entry, b'{"x": 1}')
    assert int(failure.value.status) == status
    assert message in failure.value.message
    # The entry survives its failed request and the neighbour never noticed.
    assert serving.client.is_ready(entry)
    assert_healthy(serving, healthy)


def test_script_traceback_goes_to_the_log_not_the_caller(serving: Serving) -> None:
    entry = serving.deploy(BROKEN / "run_raises")
    with pytest.raises(ScriptFailed) as failure:
        serving.client.score(entry, b"{}")
    assert "Traceback" not in failure.value.message
    log = serving.entry_log(entry)
    assert "Traceback (most recent call last)" in log
    assert "run exploded" in log


def test_timed_out_entry_answers_the_next_request(serving: Serving, make_package) -> None:  # type: ignore[no-untyped-def]
    folder = make_package(
        """
        import json, time

        def init():
            pass

        def run(raw_data):
            time.sleep(json.loads(raw_data)["sleep"])
            return "done"
        """,
        model_yaml={"timeout_seconds": 0.3},
    )
    entry = serving.deploy(folder)
    with pytest.raises(ScoringTimeout):
        serving.client.score(entry, b'{"sleep": 5}')
    assert serving.client.score(entry, b'{"sleep": 0}').body == b'"done"'
