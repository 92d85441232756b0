"""Coalescing without Triton: who travels with whom, and that every caller gets its own answer."""

from __future__ import annotations

import asyncio
import copy
import struct
from collections.abc import Sequence

import orjson
import pytest

from gateway.coalesce import Coalescer, Coalescing
from turnout.errors import BadInput, NodeUnreachable, TurnoutError
from turnout.wire import Answer, ScoringResult, decode_batch, encode_batch


class FakeNode:
    """Answers each element with its own body, after a pause long enough for others to queue."""

    def __init__(self, pause: float = 0.02, fail: Exception | None = None) -> None:
        self.batches: list[list[bytes]] = []
        self.pause, self.fail = pause, fail

    async def send_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[Answer]:
        self.batches.append([body for body, _ in items])
        await asyncio.sleep(self.pause)
        if self.fail is not None:
            raise copy.copy(self.fail)  # like a node: a new error per failed request
        return [BadInput(f"bad {body!r}") if body.startswith(b"bad") else ScoringResult(body=body + b"!")
                for body, _ in items]


def test_a_lone_request_goes_out_at_once() -> None:
    node = FakeNode(pause=0)
    coalescer = Coalescer(node.send_many, Coalescing(8), depth=2)

    async def scenario() -> None:
        for i in range(3):
            assert (await coalescer.score(b"%d" % i, b"{}")).body == b"%d!" % i

    asyncio.run(scenario())
    assert node.batches == [[b"0"], [b"1"], [b"2"]]


def test_concurrent_requests_share_triton_requests_and_get_their_own_answers() -> None:
    node = FakeNode()
    coalescer = Coalescer(node.send_many, Coalescing(8), depth=2)

    async def scenario() -> list[bytes]:
        results = await asyncio.gather(*(coalescer.score(b"%d" % i, b"{}") for i in range(30)))
        return [r.body for r in results]

    assert asyncio.run(scenario()) == [b"%d!" % i for i in range(30)]
    sizes = [len(batch) for batch in node.batches]
    assert sum(sizes) == 30 and max(sizes) == 8, sizes
    # The first two go out alone (slots free), later ones wait and leave together, in arrival order.
    assert sizes[:2] == [1, 1]
    assert [body for batch in node.batches for body in batch] == [b"%d" % i for i in range(30)]


def test_one_bad_request_fails_alone() -> None:
    node = FakeNode()
    coalescer = Coalescer(node.send_many, Coalescing(16), depth=2)

    async def scenario() -> list[ScoringResult | BaseException]:
        bodies = [b"ok1", b"ok2", b"bad3", b"ok4", b"ok5"]
        return await asyncio.gather(*(coalescer.score(b, b"{}") for b in bodies), return_exceptions=True)

    results = asyncio.run(scenario())
    assert isinstance(results[2], BadInput) and "bad3" in results[2].message
    assert [r.body for r in results if isinstance(r, ScoringResult)] == [b"ok1!", b"ok2!", b"ok4!", b"ok5!"]
    assert max(len(b) for b in node.batches) > 1


def test_a_failed_triton_request_fails_each_of_its_callers_with_an_error_of_its_own() -> None:
    node = FakeNode(fail=NodeUnreachable("node gone", details={"node": "n1"}))
    coalescer = Coalescer(node.send_many, Coalescing(16), depth=2)

    async def scenario() -> list[BaseException]:
        return await asyncio.gather(*(coalescer.score(b"x", b"{}") for _ in range(6)), return_exceptions=True)

    errors = asyncio.run(scenario())
    assert all(isinstance(e, NodeUnreachable) and e.details == {"node": "n1"} for e in errors)
    assert len({id(e) for e in errors}) == 6


def test_a_caller_that_gave_up_while_waiting_is_not_sent() -> None:
    node = FakeNode(pause=0.05)
    coalescer = Coalescer(node.send_many, Coalescing(16), depth=2)

    async def scenario() -> None:
        first = [asyncio.ensure_future(coalescer.score(b"first%d" % i, b"{}")) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(coalescer.score(b"impatient", b"{}"), 0.01)
        late = await coalescer.score(b"late", b"{}")
        assert [(await f).body for f in first] == [b"first0!", b"first1!"] and late.body == b"late!"

    asyncio.run(scenario())
    assert b"impatient" not in [body for batch in node.batches for body in batch]


def test_coalescing_follows_the_entry_config() -> None:
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig(max_batch_size=32)
    config.instance_group.add(count=3)
    assert Coalescing.of(config) == Coalescing(1, 3)  # no dynamic batcher: the package turned batching off
    config.dynamic_batching.SetInParent()
    shape = Coalescing.of(config)
    assert shape == Coalescing(32, 3)
    # Never fewer Triton requests in flight than two per instance: run() instances must not idle.
    assert (shape.depth(4), shape.depth(8), Coalescing(64, 1).depth(4)) == (6, 8, 4)


def test_batch_codec_round_trip_with_inline_errors() -> None:
    payload, header_length = encode_batch([(b"a", b"{}"), (b"bcd", b'{"m":1}')])
    header = orjson.loads(payload[:header_length])
    assert [i["shape"] for i in header["inputs"]] == [[2, 1], [2, 1]]
    assert payload[header_length:] == (struct.pack("<I", 1) + b"a" + struct.pack("<I", 3) + b"bcd"
                                       + struct.pack("<I", 2) + b"{}" + struct.pack("<I", 7) + b'{"m":1}')
    ok = b'{"status":200,"content_type":"application/json","headers":{}}'
    failed = orjson.dumps({"error": BadInput("no x").to_wire()})
    bodies = struct.pack("<I", 2) + b"[]" + struct.pack("<I", 0)
    metas = struct.pack("<I", len(ok)) + ok + struct.pack("<I", len(failed)) + failed
    answer_header = orjson.dumps({"outputs": [
        {"name": "BODY", "parameters": {"binary_data_size": len(bodies)}},
        {"name": "META", "parameters": {"binary_data_size": len(metas)}},
    ]})
    first, second = decode_batch(answer_header + bodies + metas, len(answer_header), 2)
    assert isinstance(first, ScoringResult) and first.body == b"[]"
    assert isinstance(second, BadInput) and second.message == "no x"
    with pytest.raises(TurnoutError, match="2 results to 3"):
        decode_batch(answer_header + bodies + metas, len(answer_header), 3)


def test_closing_cancels_waiting_and_travelling_callers() -> None:
    node = FakeNode(pause=0.02)
    coalescer = Coalescer(node.send_many, Coalescing(2), depth=2)

    async def scenario() -> list[BaseException | ScoringResult]:
        callers = [asyncio.ensure_future(coalescer.score(b"%d" % i, b"{}")) for i in range(7)]
        await asyncio.sleep(0.01)
        node.pause = 10  # the batches that leave next hang
        await asyncio.sleep(0.03)
        assert [len(b) for b in node.batches] == [1, 1, 2, 2] and coalescer.waiting == 1
        coalescer.close()
        return await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), 1)

    results = asyncio.run(scenario())
    assert all(isinstance(r, ScoringResult) for r in results[:2])
    assert all(isinstance(r, asyncio.CancelledError) for r in results[2:]), results
