"""Memory is visible (GET /models, metrics), an instance over its memory limit is restarted and reported,
and one crash is healed once, however many callers saw it."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from tests.conftest import PackageFactory
from tests.gateway.fakes import FakeNode, inprocess, settings_for
from tests.gateway.test_inprocess import until

pytestmark = pytest.mark.anyio
HOOKS = "def predict(batch):\n    return batch\n"
GiB = 1024**3


async def test_memory_is_shown_and_an_instance_over_its_limit_is_restarted(
        tmp_path: Path, make_package: PackageFactory) -> None:
    node = FakeNode()
    settings = settings_for(tmp_path)
    settings.repository.mkdir(parents=True)
    async with inprocess(settings, node) as gw:
        await until(lambda: gw.services.loaded)
        shutil.copytree(make_package(HOOKS, model_yaml={"memory_limit": "1Gi"}), settings.repository / "hog")
        await gw.services.dropzone.process("hog")
        entry = "drop.hog.v1"
        node.memory[entry] = [300 * 1024**2]
        await until(lambda: gw.services.entries.get(entry).memory.get("fake-0") == [300 * 1024**2])  # type: ignore[union-attr]
        shown = (await gw.http.get("/models/hog", headers=gw.admin)).json()["versions"][0]
        assert shown["memory_bytes"] == 300 * 1024**2 and shown["memory_limit_bytes"] == GiB
        metrics = (await gw.http.get("/metrics")).text
        assert f'turnout_entry_memory_bytes{{entry="{entry}",node="fake-0"}} 3.145728e+08' in metrics

        node.memory[entry] = [int(2.4 * GiB)]  # the script holding 2.4 GB
        await until(lambda: node.loads.count(entry) == 2)
        node.memory[entry] = [100 * 1024**2]  # a fresh process
        await until(lambda: gw.services.entries.get(entry).state.value == "ready")  # type: ignore[union-attr]
        shown = (await gw.http.get("/models/hog", headers=gw.admin)).json()["versions"][0]
        assert shown["restarts"] == 1 and "used 2.4 GiB, over its memory limit of 1.0 GiB" in shown["last_crash"]
        assert (await gw.http.post("/models/hog/score", content=b"[1]", headers=gw.admin)).status_code == 200


async def test_a_limit_is_read_from_model_yaml_and_azure_resources(tmp_path: Path) -> None:
    from packager.spec import PackageSpec, load_azure_deployment

    assert PackageSpec(memory_limit="512Mi").memory_limit == 512 * 1024**2
    azure = tmp_path / "d.yml"
    azure.write_text("name: blue\ncode_configuration: {code: ., scoring_script: score.py}\n"
                     "resources: {requests: {memory: 1Gi}, limits: {memory: 2Gi}}\n")
    deployment, ignored = load_azure_deployment(azure)
    assert deployment.memory_limit == "2Gi" and "resources" in ignored
    with pytest.raises(Exception, match="is not a size"):
        PackageSpec(memory_limit="lots")


async def test_one_crash_seen_by_a_slow_probe_and_a_request_is_healed_once(
        tmp_path: Path, make_package: PackageFactory) -> None:
    node = FakeNode()
    settings = settings_for(tmp_path, health_interval_seconds=3600)
    settings.repository.mkdir(parents=True)
    async with inprocess(settings, node) as gw:
        await until(lambda: gw.services.loaded)
        shutil.copytree(make_package(HOOKS), settings.repository / "flaky")
        await gw.services.dropzone.process("flaky")
        entry = "drop.flaky.v1"
        node.crashed.add(entry)
        node.probe_seconds = 0.3
        probing = asyncio.create_task(gw.services.entries.probe())  # reaches the dead stub, answers late
        await asyncio.sleep(0.05)
        failed = await gw.http.post("/models/flaky/score", content=b"[1]", headers=gw.admin)
        assert failed.status_code == 503
        await until(lambda: gw.services.entries.get(entry).state.value == "ready")  # type: ignore[union-attr]
        await probing  # it reports the crash it saw, after the heal
        await asyncio.sleep(0.05)
        assert node.loads.count(entry) == 2, node.loads  # loaded, healed once: no second restart
        assert gw.services.entries.get(entry).restarts == 1  # type: ignore[union-attr]
