"""A Triton node that restarts comes back empty: its entries are loaded again before it takes traffic,
the deployment says degraded meanwhile, and no request fails for it. Only our own entries are probed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.fakes import FakeNode, inprocess, settings_for
from tests.gateway.test_controlplane import deploy, endpoint
from tests.gateway.test_inprocess import until

pytestmark = pytest.mark.anyio


async def test_a_node_that_comes_back_empty_is_repopulated_before_it_serves(tmp_path: Path) -> None:
    a, b = FakeNode("node-a"), FakeNode("node-b")
    async with inprocess(settings_for(tmp_path), a, b) as gw:
        await until(lambda: gw.services.loaded)
        await endpoint(gw)
        assert (await deploy(gw, tmp_path, "blue", all_traffic=True, instance_count=2)).status_code == 200
        assert "shop.blue.g1" in a.loaded and "shop.blue.g1" in b.loaded

        b.down = True  # SIGKILL
        await until(lambda: not b.healthy)
        b.loaded.clear()  # a fresh tritonserver on its address knows nothing
        b.down = False
        answers = [await gw.http.post("/endpoints/shop/score", content=b"{}", headers=gw.admin) for _ in range(30)]
        assert [a_.status_code for a_ in answers] == [200] * 30
        await until(lambda: "shop.blue.g1" in b.loaded)
        assert b.loads.count("shop.blue.g1") == 2
        shown = (await gw.http.get("/admin/endpoints/shop/deployments/blue", headers=gw.admin)).json()
        assert shown["state"] == "ready" and shown["nodes"] == ["node-a", "node-b"]
        served = {(await gw.http.post("/endpoints/shop/score", content=b"{}", headers=gw.admin)).json()["node"]
                  for _ in range(10)}
        assert served == {"node-a", "node-b"}


async def test_a_fast_restart_fails_no_request_and_shows_degraded(tmp_path: Path) -> None:
    a, b = FakeNode("node-a"), FakeNode("node-b")
    settings = settings_for(tmp_path, health_interval_seconds=3600)  # no health round: requests find it
    async with inprocess(settings, a, b) as gw:
        await until(lambda: gw.services.loaded)
        await endpoint(gw)
        await deploy(gw, tmp_path, "blue", all_traffic=True, instance_count=2)
        b.loaded.clear()
        b.fail_load["shop.blue.g1"] = "node-b is still starting"
        answers = [await gw.http.post("/endpoints/shop/score", content=b"{}", headers=gw.admin) for _ in range(20)]
        assert [x.status_code for x in answers] == [200] * 20 and {x.json()["node"] for x in answers} == {"node-a"}
        shown = (await gw.http.get("/admin/endpoints/shop/deployments/blue", headers=gw.admin)).json()
        assert shown["state"] == "degraded" and "node-b" in shown["reason"]
        del b.fail_load["shop.blue.g1"]
        entry = gw.services.entries.get("shop.blue.g1")
        assert entry is not None
        gw.services.entries.reconcile(b, set())
        await until(lambda: "shop.blue.g1" in b.loaded and entry.state.value == "ready")


async def test_only_our_own_entries_are_probed(tmp_path: Path) -> None:
    plain = tmp_path / "repository" / "plain-onnx"
    (plain / "1").mkdir(parents=True)
    (plain / "config.pbtxt").write_text('name: "plain-onnx"\nbackend: "onnxruntime"\n')
    node = FakeNode()
    async with inprocess(settings_for(tmp_path), node) as gw:
        await until(lambda: gw.services.loaded)
        assert "plain-onnx" in node.loaded
        await until(lambda: len(node.probes) >= 0)
        for _ in range(3):
            await gw.services.entries.probe()
        assert "plain-onnx" not in node.probes


async def test_only_what_never_reached_a_dead_node_is_sent_to_another(tmp_path: Path) -> None:
    a, b = FakeNode("node-a"), FakeNode("node-b")
    async with inprocess(settings_for(tmp_path, health_interval_seconds=3600), a, b) as gw:
        await until(lambda: gw.services.loaded)
        await endpoint(gw)
        await deploy(gw, tmp_path, "blue", all_traffic=True, instance_count=2)
        b.refusing = True  # connection refused: nothing was sent, so another node may take it
        refused = [await gw.http.post("/endpoints/shop/score", content=b"{}", headers=gw.admin) for _ in range(10)]
        assert [r.status_code for r in refused] == [200] * 10
        b.refusing, b.healthy, b.down = False, True, True  # died with the request in flight: it may have run
        answers = [await gw.http.post("/endpoints/shop/score", content=b"{}", headers=gw.admin) for _ in range(4)]
        assert sorted(r.status_code for r in answers) == [200, 200, 200, 502]


async def test_liveness_fails_while_no_node_answers_and_a_supervised_node_is_repopulated_at_once(
        tmp_path: Path) -> None:
    node = FakeNode("embedded")
    settings = settings_for(tmp_path, health_interval_seconds=3600)  # only the provider's word wakes the loop
    async with inprocess(settings, node) as gw:
        await until(lambda: gw.services.loaded)
        assert (await gw.http.get("/healthz")).status_code == 200
        node.down = True
        gw.services.fleet.provider.changed("embedded", False)  # type: ignore[attr-defined]
        await until(lambda: not node.healthy)
        answer = await gw.http.get("/healthz")
        assert answer.status_code == 503 and answer.json()["reason"] == "no Triton node answers"
        node.down = False
        gw.services.fleet.provider.changed("embedded", True)  # type: ignore[attr-defined]
        await until(lambda: node.healthy)
        assert (await gw.http.get("/healthz")).status_code == 200
