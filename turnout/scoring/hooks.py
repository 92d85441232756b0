"""Hook scripts: ``preprocess(payload)`` per request, ``predict(inputs)`` once per dynamic batch,
``postprocess(output)`` per request. A missing hook is the identity.

How ``predict`` sees a batch (decided per batch from what ``preprocess`` returned):
  * every input is a numpy array (or every one a torch tensor) of one dtype, and their rows have one
    shape: ``predict`` gets them as one array/tensor, concatenated along axis 0. A 1-D input is one row
    (a request's feature vector: shape ``(8,)`` adds one row of 8); an input of two or more dimensions is
    that many rows. The output (an array, tensor, list, or a dict of those) is split back: a 1-D input's
    request gets its row's output, a batch input's request the slice of its rows;
  * otherwise ``predict`` gets a list with one input per request and must return a list of equal length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from turnout.errors import BadInput, ScriptFailed, TurnoutError
from turnout.scoring import codec
from turnout.scoring.base import Scorer
from turnout.scoring.guard import call_user
from turnout.wire import ScoringRequest, ScoringResult


def _identity(value: Any) -> Any:
    return value


# Media types under which a body that parses as JSON is taken as JSON: what clients send when they do
# not say (curl -d sends form-urlencoded). Binary media (images, audio, octet-stream) stay bytes.
_MAYBE_JSON = frozenset({"", "application/x-www-form-urlencoded", "text/plain"})


def _decode_payload(request: ScoringRequest) -> Any:
    """JSON bodies are parsed; other media types (images, audio) reach preprocess as bytes."""
    if request.meta.is_json:
        return codec.loads(request.body)
    if request.meta.content_type.split(";", 1)[0].strip().lower() in _MAYBE_JSON:
        try:
            return codec.loads(request.body)
        except BadInput:
            pass
    return request.body


def _is_torch(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "shape")


def _rows(x: Any) -> Any:
    """A 1-D input as one row; anything with two or more dimensions is already rows."""
    return x[None] if x.ndim == 1 else x


def _stack_plan(inputs: list[Any]) -> tuple[Any, list[int | None]] | None:
    """Concatenate stackable inputs; return the batch and each request's row count (None: one row,
    from a 1-D input, whose request gets that row's output itself)."""
    first = inputs[0]
    if isinstance(first, np.ndarray):
        if first.ndim == 0 or not all(isinstance(x, np.ndarray) and x.ndim >= 1 and x.dtype == first.dtype
                                      for x in inputs):
            return None
        rows = [_rows(x) for x in inputs]
        if any(r.shape[1:] != rows[0].shape[1:] for r in rows):
            return None
        return (rows[0] if len(rows) == 1 else np.concatenate(rows, axis=0)), [
            None if x.ndim == 1 else len(x) for x in inputs]
    if _is_torch(first):
        if first.dim() == 0 or not all(_is_torch(x) and x.dim() >= 1 and x.dtype == first.dtype for x in inputs):
            return None
        rows = [_rows(x) for x in inputs]
        if any(r.shape[1:] != rows[0].shape[1:] for r in rows):
            return None
        import torch

        return (rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)), [
            None if x.dim() == 1 else int(x.shape[0]) for x in inputs]
    return None


def _split(output: Any, counts: list[int | None], what: str) -> list[Any]:
    total = sum(1 if c is None else c for c in counts)
    if isinstance(output, dict):
        columns = {key: _split(value, counts, what) for key, value in output.items()}
        return [{key: parts[i] for key, parts in columns.items()} for i in range(len(counts))]
    if not hasattr(output, "__len__") or isinstance(output, (str, bytes)) or len(output) != total:
        length = len(output) if hasattr(output, "__len__") else "no length"
        raise ScriptFailed(f"{what} returned {type(output).__name__} ({length}); expected {total} rows, one per input row")
    parts, start = [], 0
    for count in counts:
        parts.append(output[start] if count is None else output[start:start + count])
        start += 1 if count is None else count
    return parts


class HooksScorer(Scorer):
    mode = "hooks"

    def __init__(self, module: Any, script: str, timeout: float) -> None:
        super().__init__(module, script, timeout)
        self._preprocess: Callable[[Any], Any] = getattr(module, "preprocess", _identity)
        self._predict: Callable[[Any], Any] = getattr(module, "predict", _identity)
        self._postprocess: Callable[[Any], Any] = getattr(module, "postprocess", _identity)

    def describe(self) -> str:
        present = [h for h in ("preprocess", "predict", "postprocess") if hasattr(self.module, h)]
        return f"{self.mode} ({', '.join(present)}; others are the identity)"

    def _score_one(self, request: ScoringRequest) -> ScoringResult:
        result = self.score([request])[0]
        if isinstance(result, TurnoutError):
            raise result
        return result

    def score(self, requests: list[ScoringRequest]) -> list[ScoringResult | TurnoutError]:
        results: list[ScoringResult | TurnoutError | None] = [None] * len(requests)
        live: list[int] = []
        inputs: list[Any] = []
        for i, request in enumerate(requests):
            try:
                payload = _decode_payload(request)
                inputs.append(call_user(self._preprocess, payload, timeout=self.timeout, what=self._what("preprocess")))
                live.append(i)
            except TurnoutError as exc:
                self.log_failure(exc)
                results[i] = exc
        if live:
            try:
                outputs = self._predict_batch(inputs)
            except TurnoutError as exc:
                self.log_failure(exc)
                outputs = [exc] * len(live)
            for i, output in zip(live, outputs, strict=True):
                results[i] = output if isinstance(output, TurnoutError) else self._finish(output)
        return [r for r in results if r is not None]

    def _predict_batch(self, inputs: list[Any]) -> Sequence[Any]:
        what = self._what("predict")
        plan = _stack_plan(inputs)
        if plan is not None:
            batch, counts = plan
            return _split(call_user(self._predict, batch, timeout=self.timeout, what=what), counts, what)
        outputs = call_user(self._predict, inputs, timeout=self.timeout, what=what)
        if isinstance(outputs, (str, bytes, dict)) or not hasattr(outputs, "__len__") or len(outputs) != len(inputs):
            raise ScriptFailed(
                f"{what} got a list of {len(inputs)} inputs and must return a list of {len(inputs)} outputs, "
                f"returned {type(outputs).__name__}"
            )
        return list(outputs)

    def _finish(self, output: Any) -> ScoringResult | TurnoutError:
        try:
            final = call_user(self._postprocess, output, timeout=self.timeout, what=self._what("postprocess"))
            return ScoringResult(body=codec.dumps(final))
        except TurnoutError as exc:
            self.log_failure(exc)
            return exc

    def _what(self, hook: str) -> str:
        return f"{hook}() in {self.script}"
