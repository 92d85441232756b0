"""Route snapshots: weighted choice, pinning, model versions, and what an unready target answers."""

from __future__ import annotations

import random

import pytest

from gateway.entries import EntryState
from gateway.routing import EndpointRoute, Routes, Served, Target
from tests.gateway.fakes import FakeNode
from turnout.errors import NodeUnreachable, NotFound, NotReady


def served(entry: str | None, state: EntryState = EntryState.ready, reason: str = "") -> Served:
    target = Target(entry, (FakeNode(),)) if entry else None
    return Served(target, state, reason)


def route(traffic: dict[str, int]) -> EndpointRoute:
    return EndpointRoute(name="e", auth_mode="key", key_hashes=(), deployments={d: served(f"e.{d}.g1") for d in traffic},
                         traffic=tuple((d, w) for d, w in sorted(traffic.items()) if w > 0))


def test_weights_decide_the_share_of_each_deployment() -> None:
    rng = random.Random(7)
    picks = [route({"blue": 90, "green": 10}).choose(rng) for _ in range(5000)]
    assert 0.87 < picks.count("blue") / 5000 < 0.93
    assert {route({"blue": 0, "green": 100}).choose(rng) for _ in range(100)} == {"green"}


def test_no_traffic_is_not_ready_and_an_unknown_pin_names_the_known_ones() -> None:
    with pytest.raises(NotReady, match="no deployment taking traffic"):
        route({"blue": 0}).choose(random.Random())
    with pytest.raises(NotFound, match=r"deployments: blue, green"):
        route({"blue": 100, "green": 0}).deployment("red")


def test_the_latest_ready_version_answers_unless_one_is_named() -> None:
    routes = Routes(models={"m": {1: served("m-v1"), 2: served(None, EntryState.loading), 3: served(None, EntryState.failed)}})
    assert routes.model("m", None)[0] == 1
    assert routes.model("m", 2)[0] == 2
    with pytest.raises(NotFound, match=r"versions: 1, 2, 3"):
        routes.model("m", 9)
    removed = Routes(removed={"gone": "its package was deleted"})
    with pytest.raises(NotFound, match="was removed: its package was deleted"):
        removed.model("gone", None)


def test_an_unready_target_says_why_and_when_to_retry() -> None:
    with pytest.raises(NotReady) as loading:
        served(None, EntryState.loading, "being placed").ready_target("deployment 'blue'")
    assert loading.value.retry_after == 5 and "is loading: being placed" in loading.value.message
    with pytest.raises(NotFound, match="no longer served"):
        served(None, EntryState.unloaded, "replaced").ready_target("model 'm'")


def test_a_target_rotates_over_healthy_nodes_only() -> None:
    a, b, c = FakeNode("a"), FakeNode("b"), FakeNode("c")
    b.healthy = False
    target = Target("x", (a, b, c))
    assert {target.pick().name for _ in range(10)} == {"a", "c"}
    a.healthy = c.healthy = False
    with pytest.raises(NodeUnreachable):
        target.pick()
