from http import HTTPStatus

from turnout.errors import BadInput, NotReady, ScoringTimeout, ScriptFailed, TurnoutError, from_wire


def test_error_round_trips_through_a_triton_message() -> None:
    wire = ScoringTimeout("run() took too long", details={"timeout": 0.5}).to_wire()
    # Triton wraps our message in its own text; the gateway still finds ours.
    back = from_wire(f"in ensemble 'x': {wire}")
    assert isinstance(back, ScoringTimeout)
    assert back.status == HTTPStatus.GATEWAY_TIMEOUT
    assert back.message == "run() took too long"
    assert back.details == {"timeout": 0.5}


def test_foreign_messages_are_not_ours() -> None:
    assert from_wire("Stub process 'm' is not healthy.") is None
    assert from_wire("turnout-error:{not json") is None


def test_body_carries_code_message_and_request_id() -> None:
    assert BadInput("no data").to_dict("r-1") == {
        "error": {"code": "bad_input", "message": "no data"},
        "request_id": "r-1",
    }


def test_every_error_has_its_own_status() -> None:
    assert (BadInput.status, ScriptFailed.status, NotReady.status) == (400, 500, 503)
    assert issubclass(ScriptFailed, TurnoutError)
    assert NotReady("warming up", retry_after=5).retry_after == 5
