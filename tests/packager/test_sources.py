import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from packager.sources import resolve_source
from turnout.errors import PackageError
from turnout.manifest import CODE_DIR, MODELS_DIR

SCORE = "def init():\n    pass\n\ndef run(raw_data):\n    return raw_data\n"


def package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "my-model"
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


def test_model_folder_keeps_its_name_under_azureml_model_dir(tmp_path: Path) -> None:
    root = package(tmp_path, {"score.py": SCORE, "model/weights.bin": "w", "model/sub/x.txt": "x", "util.py": ""})
    with resolve_source(str(root)) as staged:
        assert staged.name == "my-model" and staged.model_name == "model"
        assert (staged.root / MODELS_DIR / "model" / "sub" / "x.txt").read_text() == "x"
        # The model is not copied twice: code/ holds the code only.
        assert sorted(p.name for p in (staged.root / CODE_DIR).iterdir()) == ["score.py", "util.py"]


def test_single_model_file_sits_directly_under_azureml_model_dir(tmp_path: Path) -> None:
    root = package(tmp_path, {"src/score.py": SCORE, "clf.pkl": "p", "model.yaml": "code: src\nmodel_path: clf.pkl\n"})
    with resolve_source(str(root)) as staged:
        assert (staged.root / MODELS_DIR / "clf.pkl").read_text() == "p"
        assert staged.model_name == "clf.pkl"
        assert sorted(p.name for p in (staged.root / CODE_DIR).iterdir()) == ["score.py"]


def test_missing_script_and_model_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="scoring script 'score.py' not found"):
        resolve_source(str(package(tmp_path, {"other.py": ""})))
    root = tmp_path / "m2"
    root.mkdir()
    (root / "score.py").write_text(SCORE)
    (root / "model.yaml").write_text("model_path: nowhere\n")
    with pytest.raises(PackageError, match="model path .*nowhere does not exist"):
        resolve_source(str(root))
    with pytest.raises(PackageError, match="not a registered model"):
        resolve_source(str(tmp_path / "does-not-exist"))


def test_content_hash_follows_content_and_serving_settings(tmp_path: Path) -> None:
    root = package(tmp_path, {"score.py": SCORE, "model/w": "1"})
    with resolve_source(str(root)) as a:
        first = a.content_hash()
    with resolve_source(str(root)) as b:
        assert b.content_hash() == first
    (root / "model.yaml").write_text("timeout_seconds: 3\n")
    with resolve_source(str(root)) as c:
        assert c.content_hash() != first


def test_tar_and_zip_archives(tmp_path: Path) -> None:
    root = package(tmp_path, {"score.py": SCORE, "model/w": "1"})
    tar_path = tmp_path / "pkg.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tf:
        tf.add(root, arcname="my-model")
    zip_path = tmp_path / "flat.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.write(root / "score.py", "score.py")
        zf.write(root / "model" / "w", "model/w")
    with resolve_source(str(tar_path)) as staged:
        assert staged.name == "my-model" and (staged.root / MODELS_DIR / "model" / "w").exists()
    with resolve_source(str(zip_path)) as staged:
        assert staged.name == "flat" and (staged.root / CODE_DIR / "score.py").exists()


def test_archive_members_cannot_escape(tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escaped.py", "x")
    with pytest.raises(PackageError, match="outside the package"):
        resolve_source(str(evil))
    evil_tar = tmp_path / "evil.tar"
    with tarfile.open(evil_tar, "w") as tf:
        info = tarfile.TarInfo("../escaped.py")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(PackageError, match="cannot be extracted"):
        resolve_source(str(evil_tar))
    assert not (tmp_path / "escaped.py").exists()


def test_azure_deployment_yaml(tmp_path: Path) -> None:
    (tmp_path / "onlinescoring").mkdir()
    (tmp_path / "onlinescoring" / "score.py").write_text(SCORE)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "m.pkl").write_text("m")
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "conda.yaml").write_text("name: env\n")
    (tmp_path / "blue.yml").write_text(
        "name: blue\nendpoint_name: ep\nmodel: {path: ./model/}\n"
        "code_configuration: {code: ./onlinescoring/, scoring_script: score.py}\n"
        "environment: {conda_file: ./env/conda.yaml, image: some/image}\n"
        "instance_type: Standard_NC6s_v3\ninstance_count: 2\nrequest_settings: {request_timeout_ms: 2500}\n"
        "scale_settings: {type: default}\n"
    )
    with resolve_source(str(tmp_path / "blue.yml")) as staged:
        assert staged.name == "ep-blue"
        assert (staged.root / MODELS_DIR / "model" / "m.pkl").exists()
        assert (staged.root / "environment" / "conda.yaml").exists()
        assert (staged.spec.instance.kind, staged.spec.instance.count) == ("gpu", 2)
        assert staged.spec.timeout_seconds == 2.5
        assert staged.warnings == [
            "ignored Azure keys (not used by Turnout): scale_settings",
            "environment.image some/image is recorded, not used: models run on the Triton node's image, in an "
            "environment built from the conda_file"]
        assert (staged.root / "environment" / "image.txt").read_text() == "some/image\n"


def _bomb_zip(path: Path, megabytes: int) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("score.py", SCORE)
        with zf.open("model/zeros.bin", "w") as member:
            for _ in range(megabytes):
                member.write(b"\0" * 1024**2)
    return path


def _bomb_tar(path: Path, megabytes: int, members: int = 1) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("pkg/score.py")
        info.size = len(SCORE.encode())
        tf.addfile(info, io.BytesIO(SCORE.encode()))
        for i in range(members):
            info = tarfile.TarInfo(f"pkg/model/zeros{i}.bin")
            info.size = megabytes * 1024**2 // members
            tf.addfile(info, io.BytesIO(b"\0" * info.size))
    return path


def test_archive_bombs_are_refused_before_anything_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    zip_bomb = _bomb_zip(tmp_path / "bomb.zip", 64)  # 64 MiB of zeros in ~64 KB
    with pytest.raises(PackageError, match=r"expands more than \d+ times.*TURNOUT_ARCHIVE_MAX_RATIO"):
        resolve_source(str(zip_bomb))
    tar_bomb = _bomb_tar(tmp_path / "bomb.tar.gz", 64)
    with pytest.raises(PackageError, match="archive bomb"):
        resolve_source(str(tar_bomb))
    assert list((tmp_path / "tmp").iterdir()) == []  # the stage is cleaned

    monkeypatch.setenv("TURNOUT_ARCHIVE_MAX_RATIO", "100000")
    monkeypatch.setenv("TURNOUT_ARCHIVE_MAX_BYTES", str(16 * 1024**2))
    with pytest.raises(PackageError, match=r"more than 16777216 bytes.*TURNOUT_ARCHIVE_MAX_BYTES"):
        resolve_source(str(zip_bomb))
    monkeypatch.setenv("TURNOUT_ARCHIVE_MAX_MEMBERS", "50")
    with pytest.raises(PackageError, match="more than 50 members"):
        resolve_source(str(_bomb_tar(tmp_path / "many.tar.gz", 1, members=100)))
    # Within the bounds (raised on purpose), the same archive is a package.
    monkeypatch.setenv("TURNOUT_ARCHIVE_MAX_BYTES", str(128 * 1024**2))
    with resolve_source(str(zip_bomb)) as staged:
        assert (staged.root / MODELS_DIR / "model" / "zeros.bin").stat().st_size == 64 * 1024**2
    assert list((tmp_path / "tmp").iterdir()) == []
