from pathlib import Path

import pytest

from packager.registry import Registry
from packager.sources import resolve_source
from turnout.errors import Conflict, NotFound


def folder(tmp_path: Path, weights: str) -> Path:
    root = tmp_path / "clf"
    (root / "model").mkdir(parents=True, exist_ok=True)
    (root / "score.py").write_text("def predict(x):\n    return x\n")
    (root / "model" / "w.txt").write_text(weights)
    return root


def register(registry: Registry, path: Path, **kwargs):  # type: ignore[no-untyped-def]
    with resolve_source(str(path)) as staged:
        return registry.register(staged, **kwargs)


def test_versions_increment_and_same_content_is_idempotent(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    first, created = register(registry, folder(tmp_path, "1"), tags={"team": "a"})
    assert (first.ref, created, first.tags) == ("clf:1", True, {"team": "a"})
    again, created = register(registry, folder(tmp_path, "1"))
    assert (again.ref, created) == ("clf:1", False)
    second, created = register(registry, folder(tmp_path, "2"))
    assert (second.ref, created) == ("clf:2", True)
    assert [r.ref for r in registry.list()] == ["clf:1", "clf:2"]
    assert registry.resolve("clf").version == 2 and registry.resolve("clf:1").content_hash == first.content_hash


def test_a_version_is_never_overwritten(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    register(registry, folder(tmp_path, "1"))
    before = (registry.root / "clf" / "1" / "azureml-models" / "model" / "w.txt").read_text()
    with pytest.raises(Conflict, match="never overwritten"):
        register(registry, folder(tmp_path, "changed"), version=1)
    assert (registry.root / "clf" / "1" / "azureml-models" / "model" / "w.txt").read_text() == before
    explicit, _ = register(registry, folder(tmp_path, "changed"), version=7)
    assert explicit.version == 7
    assert register(registry, folder(tmp_path, "again"))[0].version == 8


def test_unknown_names_and_versions(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    with pytest.raises(NotFound, match="not registered"):
        registry.resolve("nope:1")
    register(registry, folder(tmp_path, "1"))
    with pytest.raises(NotFound, match=r"no version 5 \(registered: 1\)"):
        registry.resolve("clf:5")


def test_registered_package_stages_from_the_registry(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    record, _ = register(registry, folder(tmp_path, "1"), name="renamed")
    staged = resolve_source("renamed:1", registry)
    assert staged.root == registry.path_of(record)
    assert staged.content_hash() == record.content_hash
    assert staged.manifest(record.version).name == "renamed"
