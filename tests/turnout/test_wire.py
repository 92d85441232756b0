"""The wire contract, round trip: what the gateway encodes is what the backend decodes, and back."""

from __future__ import annotations

import orjson

from turnout import wire
from turnout.errors import BadInput, NotReady


def test_request_meta_round_trip_and_its_flags() -> None:
    raw = wire.encode_request_meta("POST", "a=1", {"Content-Type": "text/csv", "X-Request-Id": "r1"})
    assert wire.wants_inline_errors(raw) and not wire.is_probe(raw)
    meta = wire.decode_request_meta(raw)
    assert (meta.method, meta.query, meta.content_type, meta.is_json) == ("POST", "a=1", "text/csv", False)
    assert wire.is_probe(wire.PROBE_META) and not wire.wants_inline_errors(
        wire.encode_request_meta("GET", "", {}, inline_errors=False))
    assert wire.decode_request_meta(None) == wire.RequestMeta()


def test_answers_round_trip_through_triton_binary_outputs() -> None:
    answers: list[wire.Answer] = [wire.ScoringResult(body=b'{"y": 1}', headers={"X-A": "b"}), BadInput("row 2 is short")]
    bodies = [b"" if isinstance(a, Exception) else a.body for a in answers]
    metas = [wire.encode_answer_meta(a) for a in answers]
    # What Triton sends back for binary BYTES outputs: a JSON header, then each tensor's elements.
    blobs = [b"".join(len(x).to_bytes(4, "little") + x for x in tensor) for tensor in (bodies, metas)]
    header = orjson.dumps({"outputs": [{"name": wire.BODY, "parameters": {"binary_data_size": len(blobs[0])}},
                                       {"name": wire.META, "parameters": {"binary_data_size": len(blobs[1])}}]})
    decoded = wire.decode_batch(header + b"".join(blobs), len(header), 2)
    assert decoded[0] == answers[0]
    assert isinstance(decoded[1], BadInput) and decoded[1].message == "row 2 is short"


def test_a_request_encodes_as_triton_expects() -> None:
    payload, length = wire.encode_batch([(b"abc", b"{}"), (b"", b"{}")])
    header = orjson.loads(payload[:length])
    assert [i["shape"] for i in header["inputs"]] == [[2, 1], [2, 1]]
    assert payload[length:length + 7] == b"\x03\x00\x00\x00abc"
    assert isinstance(wire.decode_answer(b"", b"not json"), Exception)
    assert isinstance(wire.decode_answer(b"", wire.encode_answer_meta(NotReady("x"))), NotReady)
