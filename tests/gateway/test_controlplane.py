"""The control plane in process (fake nodes, the real upload, pipeline and state): traffic validation,
blue/green rollout, failed deployments, and deletion rules."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import _deployment_archive
from tests.conftest import REPO_ROOT
from tests.gateway.conftest import deployment_yaml
from tests.gateway.fakes import FakeNode, InProcess, inprocess, settings_for
from tests.gateway.test_inprocess import until
from turnout.errors import PackageError, ScriptFailed

pytestmark = pytest.mark.anyio


async def deploy(gw: InProcess, tmp: Path, name: str, endpoint: str = "shop", all_traffic: bool = False,
                 **changes: Any) -> Any:
    _, archive = _deployment_archive(deployment_yaml(tmp, name, endpoint=endpoint, **changes), None, None)
    return await gw.http.put(f"/admin/endpoints/{endpoint}/deployments/{name}", content=archive, headers={
        **gw.admin, "Content-Type": "application/gzip"}, params={"all_traffic": str(all_traffic).lower()})


async def endpoint(gw: InProcess, name: str = "shop") -> None:
    created = await gw.http.post("/admin/endpoints", json={"name": name, "auth_mode": "key"}, headers=gw.admin)
    assert created.status_code == 201, created.text


async def traffic(gw: InProcess, **body: Any) -> Any:
    return await gw.http.patch("/admin/endpoints/shop", json=body, headers=gw.admin)


async def test_traffic_is_validated_before_anything_changes(tmp_path: Path) -> None:
    async with inprocess(settings_for(tmp_path)) as gw:
        await until(lambda: gw.services.loaded)
        await endpoint(gw)
        assert (await deploy(gw, tmp_path, "blue", all_traffic=True)).status_code == 200
        assert (await deploy(gw, tmp_path, "green")).status_code == 200
        cases = [
            ({"traffic": {"blue": 60, "green": 30}}, 400, "must sum to 100"),
            ({"traffic": {"blue": 100, "red": 0}}, 400, "unknown deployment 'red'"),
            ({"traffic": {"blue": 110, "green": -10}}, 400, "between 0 and 100"),
            ({"mirror_traffic": {"green": 60}}, 400, "at most 50%"),
            ({"mirror_traffic": {"blue": 10}}, 400, "a mirror target must take none"),
        ]
        for body, status, message in cases:
            answer = await traffic(gw, **body)
            assert (answer.status_code, message in answer.json()["error"]["message"]) == (status, True), body
        assert (await gw.http.get("/admin/endpoints/shop", headers=gw.admin)).json()["traffic"] == {"blue": 100}
        assert (await traffic(gw, traffic={"blue": 90, "green": 10}, mirror_traffic={})).status_code == 200
        assert (await gw.http.get("/admin/endpoints/shop", headers=gw.admin)).json()["traffic"] == {"blue": 90, "green": 10}


async def test_weights_split_requests_and_the_header_pins(tmp_path: Path) -> None:
    async with inprocess(settings_for(tmp_path)) as gw:
        await until(lambda: gw.services.loaded)
        await endpoint(gw)
        await deploy(gw, tmp_path, "blue", all_traffic=True)
        await deploy(gw, tmp_path, "green")
        assert (await traffic(gw, traffic={"blue": 70, "green": 30})).status_code == 200
        served = [(await gw.http.post("/endpoints/shop/score", content=b"{}", headers=gw.admin)).headers[
            "azureml-model-deployment"] for _ in range(400)]
        assert 0.6 < served.count("blue") / 400 < 0.8
        pinned = await gw.http.post("/endpoints/shop/score", content=b"{}",
                                    headers={**gw.admin, "azureml-model-deployment": "green"})
        assert pinned.headers["azureml-model-deployment"] == "green" and pinned.json()["entry"] == "shop.green.g1"
        unknown = await gw.http.post("/endpoints/shop/score", content=b"{}",
                                     headers={**gw.admin, "azureml-model-deployment": "red"})
        assert unknown.status_code == 404 and "deployments: blue, green" in unknown.json()["error"]["message"]


async def test_an_update_rolls_a_new_generation_and_retires_the_old(tmp_path: Path) -> None:
    node = FakeNode()
    async with inprocess(settings_for(tmp_path), node) as gw:
        await until(lambda: gw.services.loaded)
        await endpoint(gw)
        await deploy(gw, tmp_path, "blue", all_traffic=True)
        updated = await deploy(gw, tmp_path, "blue", instance_count=2)
        assert updated.status_code == 200 and updated.json()["generation"] == 2
        assert set(node.loaded) == {"shop.blue.g2"}  # g1 drained and unloaded
        assert node.loaded["shop.blue.g2"]["instance_group"][0]["count"] == 2  # type: ignore[index]
        answer = await gw.http.post("/endpoints/shop/score", content=b"{}", headers=gw.admin)
        assert answer.json()["entry"] == "shop.blue.g2"
        assert not (tmp_path / "state" / "deployments" / "shop.blue.g1").exists()


async def test_a_failed_update_keeps_the_previous_generation_serving(tmp_path: Path) -> None:
    node = FakeNode()
    node.fail_load["shop.blue.g2"] = "shop.blue.g2: init() failed"
    async with inprocess(settings_for(tmp_path), node) as gw:
        await until(lambda: gw.services.loaded)
        await endpoint(gw)
        await deploy(gw, tmp_path, "blue", all_traffic=True)
        failed = await deploy(gw, tmp_path, "blue", instance_count=2)
        assert failed.status_code == 424
        assert "generation 1 keeps serving" in failed.json()["error"]["message"]
        assert failed.json()["error"]["details"]["log_tail"].startswith("==> fake-0 <==")
        answer = await gw.http.post("/endpoints/shop/score", content=b"{}", headers=gw.admin)
        assert (answer.status_code, answer.json()["entry"]) == (200, "shop.blue.g1")
        assert gw.services.entries.get("shop.blue.g2") is None


async def test_a_script_that_cannot_load_is_caught_before_any_node(tmp_path: Path) -> None:
    node = FakeNode()
    async with inprocess(settings_for(tmp_path), node) as gw:
        await until(lambda: gw.services.loaded)
        await endpoint(gw)
        failed = await deploy(gw, tmp_path, "bad", environment_variables={"FAIL_INIT": "1"})
        assert failed.status_code == 424 and "init refused: FAIL_INIT is set" in failed.json()["error"]["message"]
        assert node.loads == []  # the inspection refused it; no node was asked
        shown = (await gw.http.get("/admin/endpoints/shop/deployments/bad", headers=gw.admin)).json()
        assert (shown["state"], shown["provisioning_state"]) == ("failed", "Failed")
        logs = (await gw.http.get("/admin/endpoints/shop/deployments/bad/logs", headers=gw.admin)).text
        assert "Traceback" in logs and "FAIL_INIT" in logs
        refused = await traffic(gw, traffic={"bad": 100})
        assert refused.status_code == 409 and "'bad' is failed" in refused.json()["error"]["message"]


async def test_a_deployment_with_traffic_cannot_be_deleted(tmp_path: Path) -> None:
    async with inprocess(settings_for(tmp_path)) as gw:
        await until(lambda: gw.services.loaded)
        await endpoint(gw)
        await deploy(gw, tmp_path, "blue", all_traffic=True)
        refused = await gw.http.delete("/admin/endpoints/shop/deployments/blue", headers=gw.admin)
        assert refused.status_code == 409 and "shift its traffic to 0" in refused.json()["error"]["message"]
        await traffic(gw, traffic={"blue": 0})
        assert (await gw.http.delete("/admin/endpoints/shop/deployments/blue", headers=gw.admin)).status_code == 204
        gone = await gw.http.post("/endpoints/shop/score", content=b"{}", headers=gw.admin)
        assert gone.status_code == 503 and "no deployment taking traffic" in gone.json()["error"]["message"]


async def test_dotted_names_are_refused_so_no_two_endpoints_share_an_entry(tmp_path: Path) -> None:
    async with inprocess(settings_for(tmp_path)) as gw:
        await until(lambda: gw.services.loaded)
        refused = await gw.http.post("/admin/endpoints", json={"name": "abc.def", "auth_mode": "key"}, headers=gw.admin)
        assert refused.status_code == 400 and "Azure's rule" in refused.json()["error"]["message"]
        await endpoint(gw, "abc")
        with pytest.raises(PackageError, match="invalid deployment name 'def.ghi'"):
            await deploy(gw, tmp_path, "def.ghi", endpoint="abc")


async def test_every_answer_from_a_chosen_deployment_names_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    node = FakeNode()
    node.fail_score["shop.green.g1"] = ScriptFailed("KeyError: 'price' at /srv/secret/score.py line 3")
    async with inprocess(settings_for(tmp_path), node) as gw:
        await until(lambda: gw.services.loaded)
        await endpoint(gw)
        await deploy(gw, tmp_path, "blue", all_traffic=True)
        await deploy(gw, tmp_path, "green")
        assert (await traffic(gw, traffic={"blue": 50, "green": 50})).status_code == 200
        caplog.set_level(logging.INFO, logger="turnout.gateway.access")
        answers = [await gw.http.post("/endpoints/shop/score", content=b"{}", headers=gw.admin) for _ in range(40)]
        failed = [a for a in answers if a.status_code == 500]
        assert failed and all(a.headers["azureml-model-deployment"] == "green" for a in failed)
        assert all("secret" not in a.text for a in failed)  # the script's message stays in the logs
        logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == "turnout.gateway.access"]
        assert {(e["status"], e["deployment"]) for e in logged} == {(200, "blue"), (500, "green")}


async def test_a_failed_deployment_answers_without_internals_or_retry_after(tmp_path: Path) -> None:
    node = FakeNode()
    node.fail_load["shop.bad.g1"] = "shop.bad.g1: /srv/secret/score.py: init() failed: RuntimeError: db password wrong"
    async with inprocess(settings_for(tmp_path), node) as gw:
        await until(lambda: gw.services.loaded)
        await endpoint(gw)
        assert (await deploy(gw, tmp_path, "bad")).status_code == 424  # its owner is told why
        answer = await gw.http.post("/endpoints/shop/score", content=b"{}",
                                    headers={**gw.admin, "azureml-model-deployment": "bad"})
        assert answer.status_code == 503 and answer.headers["azureml-model-deployment"] == "bad"
        assert "retry-after" not in answer.headers
        assert "secret" not in answer.text and "password" not in answer.text and "get-logs" in answer.text
        assert answer.json()["request_id"] == answer.headers["x-request-id"]
        shown = (await gw.http.get("/admin/endpoints/shop/deployments/bad", headers=gw.admin)).json()
        assert "db password wrong" in shown["reason"]


async def test_swagger_keeps_its_schema_types_with_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """scripts/dev.sh serve passes --state .turnout/gateway: relative, as most users' paths are."""
    monkeypatch.chdir(tmp_path)
    settings = settings_for(Path("."), repository=Path("repository"), state_dir=Path(".turnout/gateway"))
    async with inprocess(settings) as gw:
        await until(lambda: gw.services.loaded)
        await endpoint(gw)
        code = {"code": str(REPO_ROOT / "examples" / "schema-azure"), "scoring_script": "score.py"}
        assert (await deploy(gw, tmp_path, "typed", all_traffic=True, code_configuration=code)).status_code == 200
        document = (await gw.http.get("/endpoints/shop/swagger.json", headers=gw.admin)).json()
        schema = document["paths"]["/endpoints/shop/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert schema["properties"]["data"]["format"] == "numpy.ndarray"


def test_a_schema_that_could_not_be_read_is_noted_in_the_document(tmp_path: Path) -> None:
    from packager.openapi import build_document
    from turnout.manifest import Manifest

    Manifest(name="m", version=1, content_hash="x", scoring_script="score.py").write(tmp_path)
    document = build_document("shop (typed)", "/endpoints/shop/score", tmp_path, {"error": "TypeError: bad type"})
    assert "could not be read" in document["info"]["description"] and "TypeError: bad type" in document["info"]["description"]
    assert document["info"]["x-turnout-schema-error"] == "TypeError: bad type"


async def test_a_deployment_being_made_is_visible_and_other_changes_say_why_they_wait(tmp_path: Path) -> None:
    node = FakeNode()
    async with inprocess(settings_for(tmp_path), node) as gw:
        await until(lambda: gw.services.loaded)
        await endpoint(gw)
        node.load_seconds = 3.0  # longer than a change waits for another
        creating = asyncio.create_task(deploy(gw, tmp_path, "blue"))
        await until(lambda: bool(node.loads))
        shown = await gw.http.get("/admin/endpoints/shop/deployments/blue", headers=gw.admin)
        assert shown.status_code == 200 and shown.json()["provisioning_state"] == "Creating"
        listed = (await gw.http.get("/admin/endpoints/shop/deployments", headers=gw.admin)).json()
        assert [d["name"] for d in listed] == ["blue"]
        pinned = await gw.http.post("/endpoints/shop/score", content=b"{}",
                                    headers={**gw.admin, "azureml-model-deployment": "blue"})
        assert pinned.status_code == 503 and "being created" in pinned.json()["error"]["message"]
        busy = await traffic(gw, traffic={"blue": 100})
        assert busy.status_code == 409 and "deployment 'blue' of endpoint 'shop' is being created" in busy.text
        assert (await creating).status_code == 200
        assert (await traffic(gw, traffic={"blue": 100})).status_code == 200

        updating = asyncio.create_task(deploy(gw, tmp_path, "blue", instance_count=2))
        await until(lambda: len(node.loads) == 2)
        shown = (await gw.http.get("/admin/endpoints/shop/deployments/blue", headers=gw.admin)).json()
        assert shown["provisioning_state"] == "Updating" and shown["generation"] == 1
        assert (await gw.http.post("/endpoints/shop/score", content=b"{}", headers=gw.admin)).status_code == 200
        assert (await updating).json()["generation"] == 2


async def test_the_answer_to_a_create_says_succeeded(tmp_path: Path) -> None:
    async with inprocess(settings_for(tmp_path)) as gw:
        await until(lambda: gw.services.loaded)
        await endpoint(gw)
        made = (await deploy(gw, tmp_path, "blue", all_traffic=True)).json()
        assert (made["state"], made["provisioning_state"]) == ("ready", "Succeeded")
