"""Turnout's Triton Python-based backend: the one ``model.py`` every ``backend: "python_scoring"`` entry runs.

Triton starts one stub process per model instance and imports this file there. ``initialize`` reads the
entry's ``manifest.json`` (written by the packager) and loads the entry's scoring script through
``turnout.scoring``; ``execute`` turns Triton tensors into scoring requests and back. Everything about
scoring modes lives in ``turnout.scoring``: this file only speaks Triton.

The tensors, META keys and flags are the wire contract of ``turnout.wire``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from turnout import wire
from turnout.errors import TRITON_CODE_FOR_STATUS, BadInput, TurnoutError
from turnout.manifest import Manifest
from turnout.scoring import Scorer, guard, load_scorer
from turnout.wire import ScoringRequest, ScoringResult

log = logging.getLogger("turnout.backend")


class _Tee:
    """Copies what the script prints into the entry's own log, keeping Triton's log complete too."""

    def __init__(self, primary: Any, copy: Any) -> None:
        self._primary, self._copy = primary, copy

    def write(self, text: str) -> int:
        self._copy.write(text)
        self._copy.flush()
        return int(self._primary.write(text))

    def flush(self) -> None:
        self._primary.flush()
        self._copy.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._primary, name)


def _configure_logging(entry: str) -> None:
    formatter = logging.Formatter(f"%(asctime)s %(levelname)s [{entry}] %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    log_dir = os.environ.get("TURNOUT_LOG_DIR")
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        log_file = open(Path(log_dir) / f"{entry}.log", "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        handlers.append(logging.StreamHandler(log_file))
        sys.stdout = _Tee(sys.stdout, log_file)
        sys.stderr = _Tee(sys.stderr, log_file)
        handlers[0] = logging.StreamHandler(sys.__stderr__)
        guard.deadline_log = log_file
    # The root logger, so a script's own logging.info() lands in the entry's log as it does on Azure.
    root = logging.getLogger()
    root.handlers.clear()
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def _triton_error(exc: TurnoutError) -> Any:
    code_name = TRITON_CODE_FOR_STATUS.get(int(exc.status), "INTERNAL")
    code = getattr(pb_utils.TritonError, code_name, None)
    message = exc.to_wire()
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


# The gateway's health probe: answered by the stub itself, so a crashed stub shows up without calling
# user code (Triton keeps reporting such a model READY).
_PROBE_ANSWER = ScoringResult(body=b"", status=204)


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


class TritonPythonModel:
    scorer: Scorer

    def initialize(self, args: dict[str, str]) -> None:
        self.entry = args["model_name"]
        _configure_logging(self.entry)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        manifest = Manifest.read(version_dir)
        try:
            self.scorer = load_scorer(manifest, version_dir, self.entry)
        except TurnoutError as exc:
            # Triton reports this message from the load API; the traceback is already in the log.
            raise pb_utils.TritonModelException(exc.message) from None

    def _decode(self, request: Any) -> tuple[list[ScoringRequest], bool] | None:
        """The request's bodies with their HTTP facts, and whether failures are answered inline; None
        for the gateway's health probe."""
        meta_tensor = pb_utils.get_input_tensor_by_name(request, wire.META)
        metas = meta_tensor.as_numpy().reshape(-1) if meta_tensor is not None else None
        first = _as_bytes(metas[0]) if metas is not None and len(metas) else b""
        if wire.is_probe(first):
            return None
        bodies = pb_utils.get_input_tensor_by_name(request, wire.BODY)
        if bodies is None:
            raise BadInput(f"the request has no {wire.BODY} input")
        decoded = []
        for i, body in enumerate(bodies.as_numpy().reshape(-1)):
            raw = _as_bytes(metas[min(i, len(metas) - 1)]) if metas is not None and len(metas) else None
            decoded.append(ScoringRequest(body=_as_bytes(body), meta=wire.decode_request_meta(raw)))
        return decoded, wire.wants_inline_errors(first)

    def execute(self, requests: list[Any]) -> list[Any]:
        # One Triton request may carry several bodies (a client-side batch); flatten them so the scorer
        # sees every body of this dynamic batch at once, then regroup the answers per Triton request.
        flat: list[ScoringRequest] = []
        spans: list[tuple[int, int, bool] | TurnoutError | None] = []
        for request in requests:
            try:
                decoded = self._decode(request)
                if decoded is None:
                    spans.append(None)
                    continue
                bodies, inline = decoded
                spans.append((len(flat), len(flat) + len(bodies), inline))
                flat.extend(bodies)
            except TurnoutError as exc:
                spans.append(exc)
        results = self.scorer.score(flat) if flat else []
        return [self._respond(span, results) for span in spans]

    def _respond(
        self, span: tuple[int, int, bool] | TurnoutError | None, results: list[ScoringResult | TurnoutError]
    ) -> Any:
        if span is None:
            mine: list[ScoringResult | TurnoutError] = [_PROBE_ANSWER]
        elif isinstance(span, TurnoutError):
            return pb_utils.InferenceResponse(error=_triton_error(span))
        else:
            mine = results[span[0]:span[1]]
            if not span[2]:
                failed = next((r for r in mine if isinstance(r, TurnoutError)), None)
                if failed is not None:
                    return pb_utils.InferenceResponse(error=_triton_error(failed))
        bodies = np.array([[b"" if isinstance(r, TurnoutError) else r.body] for r in mine], dtype=np.object_)
        metas = np.array([[wire.encode_answer_meta(r)] for r in mine], dtype=np.object_)
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(wire.BODY, bodies), pb_utils.Tensor(wire.META, metas)])

    def finalize(self) -> None:
        finalize = getattr(self.scorer.module, "shutdown", None) if hasattr(self, "scorer") else None
        if callable(finalize):
            try:
                finalize()
            except Exception:
                log.exception("%s: shutdown() raised", self.entry)
