import json
from pathlib import Path

from packager.build import build_entry
from packager.sources import resolve_source


def make(tmp_path: Path, body: str) -> Path:
    root = tmp_path / "m"
    root.mkdir(exist_ok=True)
    (root / "score.py").write_text(body)
    (root / "sample-request.json").write_text("{}")
    (root / "model.yaml").write_text("name: m\ninstance: {count: 2}\ntimeout_seconds: 7\n")
    return root


def test_build_writes_config_manifest_and_files(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    with resolve_source(str(make(tmp_path, "def predict(x):\n    return x\n"))) as staged:
        built = build_entry(staged, repo)
    assert built.name == "m-v1" and built.changed
    config = (repo / "m-v1" / "config.pbtxt").read_text()
    assert 'backend: "python_scoring"' in config and "count: 2" in config
    manifest = json.loads((repo / "m-v1" / "1" / "manifest.json").read_text())
    assert (manifest["name"], manifest["version"], manifest["timeout_seconds"]) == ("m", 1, 7)
    assert manifest["sample_request"] == "sample-request.json"
    assert (repo / "m-v1" / "1" / "code" / "score.py").exists()
    assert not [p for p in repo.iterdir() if p.name.startswith(".staging")]


def test_rebuild_is_a_no_op_unless_content_changed(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    with resolve_source(str(make(tmp_path, "def predict(x):\n    return x\n"))) as staged:
        build_entry(staged, repo, entry="e")
    with resolve_source(str(make(tmp_path, "def predict(x):\n    return x\n"))) as staged:
        assert not build_entry(staged, repo, entry="e").changed
    with resolve_source(str(make(tmp_path, "def predict(x):\n    return [1 for _ in x]\n"))) as staged:
        assert build_entry(staged, repo, entry="e").changed
    assert "[1 for _ in x]" in (repo / "e" / "1" / "code" / "score.py").read_text()
    assert sorted(p.name for p in repo.iterdir()) == ["e"]
