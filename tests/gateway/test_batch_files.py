"""A job's files, in process: listing, cutting, part files and the output assembled in input order."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.batch_files import JobFiles, cut, fingerprint, list_input
from turnout.errors import BadInput


def _tree(root: Path) -> Path:
    for name in ("b/2.csv", "a.csv", "b/10.csv", ".git/x", "b/.keep", "c/d/e.csv"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    return root


def test_a_folder_is_listed_recursively_sorted_without_hidden_files(tmp_path: Path) -> None:
    resolved, files = list_input(str(_tree(tmp_path / "data")), None)
    assert resolved == str((tmp_path / "data").resolve())
    assert [Path(f).relative_to(resolved).as_posix() for f in files] == ["a.csv", "b/10.csv", "b/2.csv", "c/d/e.csv"]


def test_a_file_and_a_glob(tmp_path: Path) -> None:
    root = _tree(tmp_path / "data")
    assert list_input(str(root / "a.csv"), "uri_file")[1] == [str((root / "a.csv").resolve())]
    assert [Path(f).name for f in list_input(str(root / "b" / "*.csv"), None)[1]] == ["10.csv", "2.csv"]
    assert [Path(f).name for f in list_input(str(root / "**" / "e.csv"), None)[1]] == ["e.csv"]


@pytest.mark.parametrize(("path", "kind", "message"), [
    ("missing", None, "does not exist"),
    ("empty", None, "holds no files"),
    ("*.nothing", None, "matches no file"),
    ("data/a.csv", "uri_folder", "is a file, not a folder"),
    ("data", "uri_file", "is a folder, not a file"),
    ("data", "uri_table", "use uri_folder or uri_file"),
])
def test_bad_inputs_say_what_is_wrong(tmp_path: Path, path: str, kind: str | None, message: str) -> None:
    _tree(tmp_path / "data")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match=message):
        list_input(str(tmp_path / path), kind)


def test_cut_keeps_order_and_the_remainder() -> None:
    assert cut(["a", "b", "c", "d", "e"], 2) == [["a", "b"], ["c", "d"], ["e"]]


def test_the_fingerprint_follows_inputs_and_settings(tmp_path: Path) -> None:
    files = [str(p) for p in (tmp_path / "x", tmp_path / "y")]
    for f in files:
        Path(f).write_text("1")
    base = fingerprint("e", "d", files, {"mini_batch_size": 2}, "/out", 1)
    assert base == fingerprint("e", "d", files, {"mini_batch_size": 2}, "/out", 1)
    assert base != fingerprint("e", "d", files, {"mini_batch_size": 3}, "/out", 1)
    assert base != fingerprint("e", "d", files[:1], {"mini_batch_size": 2}, "/out", 1)
    Path(files[0]).write_text("changed")
    assert base != fingerprint("e", "d", files, {"mini_batch_size": 2}, "/out", 1)


def test_the_output_is_assembled_from_done_parts_in_input_order(tmp_path: Path) -> None:
    files = JobFiles(tmp_path / "job", tmp_path / "out", "predictions.csv")
    files.create()
    late = files.write_part({"000002": "e\n", "000001-0001": "d\n"})
    early = files.write_part({"000000": "a\nb\n", "000001-0000": "c\n"})
    stale = files.write_part({"000000": "computed again\n"})  # finished, never marked done: not read
    assert len({late, early, stale}) == 3  # a part file is never rewritten
    done = [("000000", early), ("000001-0000", early), ("000001-0001", late), ("000002", late)]
    assert files.assemble(done) == 5
    assert (tmp_path / "out" / "predictions.csv").read_text() == "a\nb\nc\nd\ne\n"
    assert not list((tmp_path / "out").glob(".*"))  # no temporary left behind
    errors = files.write_errors([("/data/x.csv", "run() raised ValueError: no", "Traceback (most recent call last):")])
    assert errors.read_text().startswith("file: /data/x.csv\nerror: run() raised ValueError: no\nTraceback")
