"""Placement is pure: pools from instance types, nodes least loaded first, per-node configs from the manifest."""

from __future__ import annotations

import pytest

from gateway.placement import choose_nodes, plan, pool_for_instance_type
from tests.gateway.fakes import FakeNode
from turnout.errors import NotReady
from turnout.manifest import Manifest


def test_instance_types_pick_pools() -> None:
    assert pool_for_instance_type(None, {}, "cpu") == "cpu"
    assert pool_for_instance_type("Standard_NC6s_v3", {}, "cpu") == "gpu"
    assert pool_for_instance_type("Standard_DS3_v2", {}, "cpu") == "cpu"
    assert pool_for_instance_type("Standard_DS3_v2", {"Standard_DS3_v2": "big"}, "cpu") == "big"


def test_nodes_are_chosen_least_loaded_first_and_full_ones_last() -> None:
    a, b, c = FakeNode("a"), FakeNode("b"), FakeNode("c")
    a.spec.capacity = 1
    chosen = choose_nodes("cpu", [a, b, c], {"a": 1, "b": 3, "c": 0}, 2)
    assert [n.name for n in chosen] == ["c", "b"]
    with pytest.raises(NotReady, match=r"no node in pool 'gpu'.*pools: cpu"):
        choose_nodes("gpu", [], {}, 1, ["cpu"], "Standard_NC6")


def test_a_plan_spreads_instances_and_keeps_the_manifests_batching() -> None:
    manifest = Manifest(name="m", version=1, content_hash="x", scoring_script="score.py", max_batch_size=8,
                        dynamic_batching=False)
    gpu = FakeNode("g", pool="gpu")
    layout = plan(manifest, "e.d.g1", [FakeNode("a"), gpu], instance_count=3)
    assert {name: config["instance_group"][0]["count"] for name, config in layout.configs.items()} == {"a": 2, "g": 2}
    assert layout.configs["g"]["instance_group"][0]["kind"] == "KIND_GPU"
    assert layout.configs["a"]["max_batch_size"] == 8 and "dynamic_batching" not in layout.configs["a"]
    assert layout.coalescing.max_batch == 1  # batching off: never coalesced
