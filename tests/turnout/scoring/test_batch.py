"""Batch scoring in process: Azure's append_row format, the result count rule, a job call's log and traceback."""

from __future__ import annotations

import types

import orjson
import pandas as pd
import pytest

from turnout.errors import ScriptFailed
from turnout.scoring.batch import BatchScorer, check_count, format_rows
from turnout.wire import ScoringRequest


def test_a_list_gives_one_line_per_element() -> None:
    assert format_rows(["a b", 3, None, {"k": 1}]) == ("a b\n3\n\n{'k': 1}\n", 4)


def test_a_dataframe_gives_space_separated_rows_without_header_or_index() -> None:
    frame = pd.DataFrame({"file": ["x.png", "my file.png"], "class": [3, 7], "probability": [0.5, 0.25]})
    text, count = format_rows(frame)
    assert count == 2
    assert text == 'x.png 3 0.5\n"my file.png" 7 0.25\n'  # read back by pd.read_csv(sep=" ", header=None)


def test_the_count_must_match_the_files_unless_a_file_column_maps_rows() -> None:
    with pytest.raises(ScriptFailed, match=r"run\(\) returned 1 results for a mini-batch of 2 files \(expected 2\)"):
        check_count(["only one"], ["/d/a.csv", "/d/b.csv"])
    check_count(pd.DataFrame({"file": ["a.csv", "a.csv", "a.csv"], "y": [1, 2, 3]}), ["/d/a.csv", "/d/b.csv"])
    with pytest.raises(ScriptFailed, match="names files not in its mini-batch: z.csv"):
        check_count(pd.DataFrame({"file": ["z.csv"]}), ["/d/a.csv"])


def _scorer(run: object) -> BatchScorer:
    return BatchScorer(types.SimpleNamespace(run=run), "batch.py", timeout=5)  # type: ignore[arg-type]


def _job(files: list[str], action: str = "append_row") -> ScoringRequest:
    return ScoringRequest(orjson.dumps({"mini_batch": files, "job": {"output_action": action,
                                                                     "logging_level": "info"}}))


def test_a_job_call_answers_rows_count_and_what_the_script_printed() -> None:
    def run(files: list[str]) -> list[str]:
        print("hello from run")
        return [f.upper() for f in files]

    (result,) = _scorer(run).score([_job(["a", "b"])])
    answer = orjson.loads(result.body)  # type: ignore[union-attr]
    assert answer == {"rows": "A\nB\n", "count": 2, "log": "hello from run\n"}


def test_a_failing_job_call_carries_its_traceback_and_log() -> None:
    def run(files: list[str]) -> list[str]:
        print("about to fail")
        raise ValueError("broken file")

    (error,) = _scorer(run).score([_job(["a"])])
    assert isinstance(error, ScriptFailed)
    assert "raised ValueError: broken file" in error.message
    assert "Traceback" in error.details["traceback"] and "broken file" in error.details["traceback"]
    assert error.details["log"] == "about to fail\n"


def test_summary_only_skips_the_rows_and_the_count_rule() -> None:
    (result,) = _scorer(lambda files: ["x"]).score([_job(["a", "b"], "summary_only")])
    assert orjson.loads(result.body)["rows"] == ""  # type: ignore[union-attr]
