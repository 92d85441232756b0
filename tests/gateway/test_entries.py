"""Entries: leases hold off an unload, subscribers hear every change, and a crash heals once."""

from __future__ import annotations

import asyncio

import pytest

from gateway.entries import Entries, Entry, EntryState
from gateway.metrics import Metrics
from tests.gateway.fakes import FakeNode

pytestmark = pytest.mark.anyio


async def test_retire_waits_for_requests_in_flight_then_unloads() -> None:
    entries, node = Entries(Metrics()), FakeNode()
    entry = Entry(name="m-v1")
    entries.put(entry)
    await entries.load(entry, [node])
    entries.acquire("m-v1")
    retiring = asyncio.create_task(entries.retire(entry, EntryState.unloaded, "replaced"))
    await asyncio.sleep(0.1)
    assert entry.state is EntryState.unloaded and "m-v1" in node.loaded  # no new requests, the old one finishes
    entries.release("m-v1")
    await asyncio.wait_for(retiring, 2)
    assert node.loaded == {} and entry.nodes == ()


async def test_subscribers_hear_every_change_and_a_crash_heals_once() -> None:
    entries, node = Entries(Metrics()), FakeNode()
    heard: list[str] = []
    entry = Entry(name="m-v1")
    entries.subscribe(lambda: heard.append(entry.state.value))
    entries.put(entry)
    await entries.load(entry, [node])
    assert heard[-1] == "ready"
    entries.report_crash("m-v1", "test")
    entries.report_crash("m-v1", "test again")  # already healing: ignored
    assert entry.state is EntryState.restarting
    await asyncio.sleep(0.05)
    assert (entry.state, entry.restarts, node.loads) == (EntryState.ready, 1, ["m-v1", "m-v1"])
    assert heard[-1] == "ready" and "restarting" in heard
    await entries.stop()
