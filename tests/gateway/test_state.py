"""The durable state: one transaction per change, subscribers told after commits only."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.state import DeploymentRecord, EndpointRecord, StateStore


def test_a_change_is_applied_whole_or_not_at_all(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.sqlite3")
    told: list[int] = []
    store.subscribe(lambda: told.append(len(store.endpoints())))
    with store.transaction() as db:
        store.put_endpoint(db, EndpointRecord(name="e", auth_mode="key", traffic={"blue": 100}))
    assert told == [1]
    with pytest.raises(RuntimeError), store.transaction() as db:
        store.put_endpoint(db, EndpointRecord(name="f", auth_mode="key"))
        raise RuntimeError("half-way")
    assert [e.name for e in store.endpoints()] == ["e"] and told == [1]
    store.close()


def test_records_survive_a_reopen_and_deleting_an_endpoint_takes_its_deployments(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.sqlite3")
    with store.transaction() as db:
        store.put_endpoint(db, EndpointRecord(name="e", auth_mode="key"))
        store.put_deployment(db, DeploymentRecord(endpoint="e", name="blue", model_name="e-blue", model_version=1,
                                                  content_hash="sha256:x", entry="e.blue.g1"))
        store.record_history(db, "e", "deploy", {"deployment": "blue"})
    store.close()
    again = StateStore(tmp_path / "state.sqlite3")
    deployment = again.deployment("e", "blue")
    assert deployment is not None and deployment.entry == "e.blue.g1"
    assert again.history("e")[0]["action"] == "deploy"
    with again.transaction() as db:
        again.delete_endpoint(db, "e")
    assert again.deployments() == [] and again.endpoint("e") is None
    again.close()
