"""What the drop zone decides, in process (fake nodes; the real zone, pipeline and registry)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.dropzone import PENDING_MARKER, is_candidate
from tests.conftest import PackageFactory
from tests.gateway.fakes import FakeNode, inprocess, settings_for
from tests.gateway.test_inprocess import until

pytestmark = pytest.mark.anyio
HOOKS = "def predict(batch):\n    return batch\n"


def test_partial_and_hidden_names_are_never_acted_on(tmp_path: Path) -> None:
    for name in ("pkg.part", "pkg.tmp", ".hidden", "pkg.zip.crdownload"):
        (tmp_path / name).mkdir()
        assert not is_candidate(tmp_path / name), name
    (tmp_path / "pkg").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "model.tar.gz").write_bytes(b"")
    assert is_candidate(tmp_path / "pkg") and is_candidate(tmp_path / "model.tar.gz")
    assert not is_candidate(tmp_path / "notes.txt")


async def test_a_drop_goes_live_changes_make_a_version_and_deleting_it_unloads(
        tmp_path: Path, make_package: PackageFactory) -> None:
    node = FakeNode()
    settings = settings_for(tmp_path)
    settings.repository.mkdir(parents=True)
    async with inprocess(settings, node) as gw:
        await until(lambda: gw.services.loaded)
        zone = gw.services.dropzone
        drop = settings.repository / "fraud"
        shutil.copytree(make_package(HOOKS), drop)
        (drop / PENDING_MARKER).touch()
        await zone.process("fraud")
        assert node.loads == []  # still being written
        (drop / PENDING_MARKER).unlink()
        await zone.process("fraud")
        await zone.process("fraud")  # unchanged: nothing to do
        assert node.loads == ["drop.fraud.v1"]
        assert (await gw.http.post("/models/fraud/score", content=b"[1]", headers=gw.admin)).json()["entry"] == "drop.fraud.v1"

        (drop / "score.py").write_text(HOOKS + "# v2\n")
        await zone.process("fraud")
        assert set(node.loaded) == {"drop.fraud.v2"}  # v1 drained and unloaded once v2 was ready
        listed = {m["version"]: m["state"] for m in (await gw.http.get("/models/fraud", headers=gw.admin)).json()["versions"]}
        assert listed == {1: "unloaded", 2: "ready"}

        shutil.rmtree(drop)
        await zone.process("fraud")
        gone = await gw.http.post("/models/fraud/score", content=b"[1]", headers=gw.admin)
        assert gone.status_code == 404 and "was deleted from the repository" in gone.json()["error"]["message"]
        assert node.loaded == {}


async def test_a_bad_drop_is_reported_and_the_previous_version_keeps_serving(
        tmp_path: Path, make_package: PackageFactory) -> None:
    settings = settings_for(tmp_path)
    settings.repository.mkdir(parents=True)
    async with inprocess(settings) as gw:
        await until(lambda: gw.services.loaded)
        drop = settings.repository / "risk"
        shutil.copytree(make_package(HOOKS), drop)
        await gw.services.dropzone.process("risk")
        (drop / "score.py").write_text("def initialize():\n    pass\n\ndef score(data):\n    return data\n")
        await gw.services.dropzone.process("risk")
        models = {(m["name"], m["version"]): m for m in (await gw.http.get("/models", headers=gw.admin)).json()}
        failed = models[("risk", 0)]
        assert failed["state"] == "failed" and "defines no entry point" in failed["reason"]
        assert "it defines initialize, score" in failed["reason"]
        assert models[("risk", 1)]["state"] == "ready"
        assert (await gw.http.post("/models/risk/score", content=b"[1]", headers=gw.admin)).status_code == 200


async def test_drops_whose_names_sanitise_alike_do_not_replace_each_other(
        tmp_path: Path, make_package: PackageFactory) -> None:
    settings = settings_for(tmp_path)
    settings.repository.mkdir(parents=True)
    async with inprocess(settings) as gw:
        await until(lambda: gw.services.loaded)
        zone = gw.services.dropzone
        shutil.copytree(make_package(HOOKS), settings.repository / "coll-a")
        await zone.process("coll-a")
        shutil.copytree(make_package(HOOKS + "# another\n"), settings.repository / "coll a")
        await zone.process("coll a")
        models = {(m["name"], m["version"]): m for m in (await gw.http.get("/models", headers=gw.admin)).json()}
        assert models[("coll-a", 1)]["state"] == "ready" and ("coll-a", 2) not in models
        refused = models[("coll a", 0)]
        assert refused["state"] == "failed" and "which the drop 'coll-a' serves already" in refused["reason"]
        # Deleting the refused one leaves the model serving.
        shutil.rmtree(settings.repository / "coll a")
        await zone.process("coll a")
        assert (await gw.http.post("/models/coll-a/score", content=b"[1]", headers=gw.admin)).status_code == 200


async def test_links_leaving_a_drop_and_unreadable_drops_are_reported(
        tmp_path: Path, make_package: PackageFactory) -> None:
    settings = settings_for(tmp_path)
    settings.repository.mkdir(parents=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("the server's own file")
    async with inprocess(settings) as gw:
        await until(lambda: gw.services.loaded)
        zone = gw.services.dropzone
        leaky = settings.repository / "leaky"
        shutil.copytree(make_package(HOOKS), leaky)
        (leaky / "model").mkdir(exist_ok=True)
        (leaky / "model" / "weights.txt").symlink_to(secret)
        await zone.process("leaky")
        looping = settings.repository / "looping"
        shutil.copytree(make_package(HOOKS), looping)
        (looping / "a").symlink_to(looping / "b")
        (looping / "b").symlink_to(looping / "a")
        await zone.process("looping")
        inside = settings.repository / "inside"
        shutil.copytree(make_package(HOOKS), inside)
        (inside / "model").mkdir(exist_ok=True)
        (inside / "model" / "w.txt").write_text("1")
        (inside / "model" / "alias.txt").symlink_to(inside / "model" / "w.txt")
        await zone.process("inside")
        models = {m["name"]: m for m in (await gw.http.get("/models", headers=gw.admin)).json()}
        assert models["leaky"]["state"] == "failed" and "leads outside the package" in models["leaky"]["reason"]
        assert models["looping"]["state"] == "failed" and "loops or leads nowhere" in models["looping"]["reason"]
        assert models["inside"]["state"] == "ready"  # a link within the package is fine
        assert not any("the server's own file" in p.read_text(errors="replace")
                       for p in settings.state_dir.rglob("*.txt") if p.is_file())


async def test_a_drop_that_fails_outside_our_errors_is_reported(tmp_path: Path, make_package: PackageFactory,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil as shutil_module

    settings = settings_for(tmp_path)
    settings.repository.mkdir(parents=True)
    async with inprocess(settings) as gw:
        await until(lambda: gw.services.loaded)
        shutil.copytree(make_package(HOOKS), settings.repository / "odd")

        def broken_copy(*args: object, **kwargs: object) -> None:
            raise shutil_module.Error([("a", "b", "[Errno 40] Too many levels of symbolic links")])

        monkeypatch.setattr("packager.sources.shutil.copytree", broken_copy)
        await gw.services.dropzone.process("odd")
        models = {m["name"]: m for m in (await gw.http.get("/models", headers=gw.admin)).json()}
        assert models["odd"]["state"] == "failed" and "could not be read (Error:" in models["odd"]["reason"]


TABULATE = "import tabulate\ndef predict(batch):\n    return batch\n"


async def test_a_drop_with_requirements_is_building_then_live_and_a_bad_one_fails_alone(
        tmp_path: Path, make_package: PackageFactory) -> None:
    node = FakeNode()
    settings = settings_for(tmp_path, environments_dir=tmp_path / "environments")
    settings.repository.mkdir(parents=True)
    async with inprocess(settings, node) as gw:
        await until(lambda: gw.services.loaded)
        zone, models = gw.services.dropzone, gw.services.models
        seen: list[str] = []
        models.entries.subscribe(lambda: seen.extend(f"{m.state}: {m.reason}" for m in models.all()
                                                     if m.info.name == "tables"))
        shutil.copytree(make_package(TABULATE, files={"requirements.txt": "tabulate==0.9.0\n"}),
                        settings.repository / "tables")
        await zone.process("tables")
        assert any(s.startswith("building: building its environment: [") for s in seen), seen
        assert node.loads == ["drop.tables.v1"]
        listed = {m["name"]: m for m in (await gw.http.get("/models", headers=gw.admin)).json()}
        assert listed["tables"]["state"] == "ready" and listed["tables"]["environment"]
        assert (tmp_path / "environments" / listed["tables"]["environment"]).is_dir()

        shutil.copytree(make_package(TABULATE, files={"requirements.txt": "tabulate==99.0\n"}),
                        settings.repository / "nothing")
        await zone.process("nothing")
        listed = {m["name"]: m for m in (await gw.http.get("/models", headers=gw.admin)).json()}
        assert listed["nothing"]["state"] == "failed"
        assert "its environment could not be built (no matching distribution)" in listed["nothing"]["reason"]
        assert "tabulate==99.0" in listed["nothing"]["log_tail"]
        assert listed["tables"]["state"] == "ready" and node.loads == ["drop.tables.v1"]
