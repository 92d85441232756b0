"""What the gateway CLI's verbs share, in process."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli_common import DEFAULT_STATE, _key_file


def test_the_default_state_folder_is_found_from_a_subfolder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / DEFAULT_STATE / "admin.key"
    key.parent.mkdir(parents=True)
    key.write_text("k")
    inner = tmp_path / "examples" / "batch-images"
    inner.mkdir(parents=True)
    monkeypatch.chdir(inner)
    assert _key_file(DEFAULT_STATE) == key
    assert _key_file(Path("elsewhere")) == Path("elsewhere") / "admin.key"  # a state given is taken as given
