"""The gateway built in process over fake nodes: serving, failure, healing and readiness decided by the
gateway's own logic, with no Triton and no subprocess (but the drop zone's and the packager's real code)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.entries import EntryState
from packager.build import build_entry
from packager.sources import resolve_source
from tests.conftest import PackageFactory
from tests.gateway.fakes import FakeNode, inprocess, settings_for

pytestmark = pytest.mark.anyio

HOOKS = """
def predict(batch):
    return batch
"""


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def built_model(root: Path, make_package: PackageFactory, name: str) -> None:
    with resolve_source(str(make_package(HOOKS, name=name))) as package:
        build_entry(package, root / "repository", entry=f"{name}-v1")


async def test_a_repository_model_is_served_and_listed(tmp_path: Path, make_package: PackageFactory) -> None:
    built_model(tmp_path, make_package, "echo")
    async with inprocess(settings_for(tmp_path)) as gw:
        await until(lambda: gw.services.loaded)
        assert (await gw.http.get("/readyz")).status_code == 200
        answer = await gw.http.post("/models/echo/score", content=b'{"x": 1}', headers=gw.admin)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"entry": "echo-v1", "node": "fake-0", "echo": '{"x": 1}'}
        assert answer.headers["x-turnout-model-version"] == "1"
        listed = (await gw.http.get("/models", headers=gw.admin)).json()
        assert [(m["name"], m["state"], m["nodes"]) for m in listed] == [("echo", "ready", ["fake-0"])]
        assert (await gw.http.post("/models/echo/score", content=b"{}")).status_code == 401


async def test_a_model_that_fails_to_load_fails_alone(tmp_path: Path, make_package: PackageFactory) -> None:
    built_model(tmp_path, make_package, "good")
    built_model(tmp_path, make_package, "bad")
    node = FakeNode()
    node.fail_load["bad-v1"] = "bad-v1: init() failed: RuntimeError: boom"
    async with inprocess(settings_for(tmp_path), node) as gw:
        await until(lambda: gw.services.loaded)
        bad = await gw.http.post("/models/bad/score", content=b"{}", headers=gw.admin)
        assert bad.status_code == 503 and bad.json()["error"]["code"] == "not_ready"
        assert "init() failed" in bad.json()["error"]["message"]
        failed = (await gw.http.get("/models/bad", headers=gw.admin)).json()["versions"][0]
        assert failed["state"] == "failed" and "log of bad-v1" in failed["log_tail"]
        assert (await gw.http.post("/models/good/score", content=b"{}", headers=gw.admin)).status_code == 200


async def test_a_crashed_stub_is_healed_and_serves_again(tmp_path: Path, make_package: PackageFactory) -> None:
    built_model(tmp_path, make_package, "fragile")
    node = FakeNode()
    async with inprocess(settings_for(tmp_path), node) as gw:
        await until(lambda: gw.services.loaded)
        node.crashed.add("fragile-v1")
        crashed = await gw.http.post("/models/fragile/score", content=b"{}", headers=gw.admin)
        assert crashed.status_code == 503 and crashed.headers["retry-after"]
        entry = gw.services.entries.get("fragile-v1")
        assert entry is not None
        await until(lambda: entry.state is EntryState.ready and entry.restarts == 1)
        assert node.loads.count("fragile-v1") == 2  # unloaded and loaded again, once
        assert (await gw.http.post("/models/fragile/score", content=b"{}", headers=gw.admin)).status_code == 200


async def test_a_dead_node_answers_502_and_readiness_follows_it(tmp_path: Path, make_package: PackageFactory) -> None:
    built_model(tmp_path, make_package, "m")
    node = FakeNode()
    async with inprocess(settings_for(tmp_path), node) as gw:
        await until(lambda: gw.services.loaded)
        node.down = True
        answer = await gw.http.post("/models/m/score", content=b"{}", headers=gw.admin)
        assert answer.status_code == 502 and answer.json()["error"]["code"] == "node_unreachable"
        await until(lambda: not gw.services.ready)
        assert (await gw.http.get("/readyz")).status_code == 503
        node.down = False
        await until(lambda: gw.services.ready)


async def test_routes_republish_when_an_entry_changes(tmp_path: Path, make_package: PackageFactory) -> None:
    """Nobody rebuilds routes by hand: changing an entry's state is enough for the next request to see it."""
    built_model(tmp_path, make_package, "m")
    async with inprocess(settings_for(tmp_path)) as gw:
        await until(lambda: gw.services.loaded)
        entry = gw.services.entries.get("m-v1")
        assert entry is not None
        gw.services.entries.set_state(entry, EntryState.failed, "taken down by the test")
        refused = await gw.http.post("/models/m/score", content=b"{}", headers=gw.admin)
        assert refused.status_code == 503 and "taken down by the test" in refused.json()["error"]["message"]


async def test_endpoint_names_cannot_be_enumerated_and_the_state_is_private(tmp_path: Path) -> None:
    async with inprocess(settings_for(tmp_path)) as gw:
        await until(lambda: gw.services.loaded)
        await gw.http.post("/admin/endpoints", json={"name": "real-one", "auth_mode": "key"}, headers=gw.admin)
        for name in ("ghost", "real-one"):
            assert (await gw.http.post(f"/endpoints/{name}/score", content=b"{}")).status_code == 401
            guessed = await gw.http.post(f"/endpoints/{name}/score", content=b"{}", headers={"Authorization": "Bearer guess"})
            assert guessed.status_code == 401
            assert (await gw.http.get(f"/endpoints/{name}/swagger.json")).status_code == 401
        assert (await gw.http.post("/endpoints/ghost/score", content=b"{}", headers=gw.admin)).status_code == 404
        state = tmp_path / "state"
        assert state.stat().st_mode & 0o777 == 0o700
        for file in ("state.sqlite3", "state.sqlite3-wal"):
            assert (state / file).stat().st_mode & 0o777 == 0o600, file
