"""Azure ML batch scripts: ``init()`` + ``run(mini_batch: list[str]) -> list | pandas.DataFrame``.

One request carries one mini-batch: a JSON list of strings (file paths, usually), or an object
``{"mini_batch": [...]}``. The answer is the list, or the DataFrame as a list of records.

A batch job's runner (gateway/batch_runner.py) adds ``"job": {"output_action", "logging_level", "timeout"}``
to the object. Its answer is then what the job writes: ``{"rows": text, "count": n, "log": text}``, the rows
already in Azure's ``append_row`` format (formatted here, where the DataFrame still is one), and what the
script printed or logged during this call. A failure carries its traceback and that log in its details, so
the job's errors file can show them (the caller is the gateway itself, never a client).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import traceback
from collections.abc import Iterator
from typing import Any

from turnout.errors import BadInput, ScriptFailed, TurnoutError
from turnout.scoring import codec
from turnout.scoring.base import Scorer
from turnout.scoring.guard import call_user, watchdog_span
from turnout.wire import ScoringRequest, ScoringResult

# A DataFrame column that names each row's input file: with it, a file may give any number of rows.
FILE_COLUMN = "file"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
           "critical": logging.CRITICAL}


def _is_frame(value: Any) -> bool:
    return hasattr(value, "columns") and hasattr(value, "to_csv")


def format_rows(output: Any) -> tuple[str, int]:
    """Azure's append_row format: a list gives one line per element (``str`` of it); a DataFrame one line
    per row, values separated by a space, no header, no index (Azure's samples read it back with
    ``pd.read_csv(path, header=None, sep=" ")``)."""
    if _is_frame(output):
        text = output.to_csv(sep=" ", header=False, index=False, lineterminator="\n")
        return text, len(output)
    lines = ["" if item is None else str(item) for item in output]
    return "".join(f"{line}\n" for line in lines), len(lines)


def check_count(output: Any, files: list[str]) -> None:
    """One result per file, as Azure counts successes; a DataFrame with a ``file`` column maps its rows
    to files itself (a tabular file gives many rows), so only those values are checked."""
    if _is_frame(output) and FILE_COLUMN in output.columns:
        known = set(files) | {os.path.basename(f) for f in files}
        strangers = sorted({str(v) for v in output[FILE_COLUMN]} - known)
        if strangers:
            raise ScriptFailed(f"run() returned rows whose {FILE_COLUMN!r} column names files not in its mini-batch: "
                               f"{', '.join(strangers[:3])}")
        return
    count = len(output)
    if count != len(files):
        raise ScriptFailed(
            f"run() returned {count} results for a mini-batch of {len(files)} files (expected {len(files)}): "
            f"return one list element or DataFrame row per file, or a DataFrame with a {FILE_COLUMN!r} column "
            "naming each row's file when a file gives several rows")


class _Capture:
    """What the script prints and logs during one call (the stub runs one call at a time). One handler,
    kept: made per call it costs more than a quick run() does."""

    def __init__(self) -> None:
        self.handler = logging.StreamHandler(io.StringIO())
        self.handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    @contextlib.contextmanager
    def __call__(self, level: str) -> Iterator[io.StringIO]:
        buffer = io.StringIO()
        self.handler.stream = buffer
        self.handler.setLevel(_LEVELS.get(level, logging.INFO))
        root = logging.getLogger()
        previous = root.level
        root.addHandler(self.handler)
        root.setLevel(min(previous or logging.WARNING, self.handler.level))
        try:
            with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                yield buffer
        finally:
            root.removeHandler(self.handler)
            root.setLevel(previous)


class BatchScorer(Scorer):
    mode = "azure-batch"
    _capture: _Capture | None = None

    def score(self, requests: list[ScoringRequest]) -> list[ScoringResult | TurnoutError]:
        if len(requests) == 1:
            return super().score(requests)
        with watchdog_span():  # a job's quick mini-batches: one watchdog for all of them
            return super().score(requests)

    def _score_one(self, request: ScoringRequest) -> ScoringResult:
        payload = codec.loads(request.body)
        job = payload.get("job") if isinstance(payload, dict) else None
        if isinstance(payload, dict):
            payload = payload.get("mini_batch")
        if not isinstance(payload, list) or not all(isinstance(item, str) for item in payload):
            raise BadInput('a batch request is a JSON list of strings, or {"mini_batch": [...]}')
        if isinstance(job, dict):
            return self._job_call(payload, job)
        output = self._run(payload)
        return ScoringResult(body=codec.dumps(output))

    def _run(self, files: list[str], timeout: float | None = None) -> Any:
        output = call_user(self.module.run, files, timeout=timeout or self.timeout, what=f"run() in {self.script}")
        if not (isinstance(output, list) or _is_frame(output)):
            raise ScriptFailed(
                f"run() in {self.script} returned {type(output).__name__}; a batch run() returns a list "
                "or a pandas.DataFrame"
            )
        return output

    def _job_call(self, files: list[str], job: dict[str, Any]) -> ScoringResult:
        if self._capture is None:
            self._capture = _Capture()
        with self._capture(str(job.get("logging_level", "info"))) as log:
            try:
                bound = job.get("timeout")
                output = self._run(files, float(bound) if isinstance(bound, (int, float)) and bound > 0 else None)
                if job.get("output_action") == "summary_only":
                    rows, count = "", len(output)
                else:
                    check_count(output, files)
                    rows, count = format_rows(output)
            except TurnoutError as exc:
                cause = exc.__cause__ or exc
                exc.details.update(traceback="".join(traceback.format_exception(cause)), log=log.getvalue())
                raise
        return ScoringResult(body=codec.dumps({"rows": rows, "count": count, "log": log.getvalue()}))
