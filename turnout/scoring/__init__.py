"""The transport-free scoring core: load a script, detect its mode once, score batches of requests.

Triton's stub (backends/python_scoring/model.py) and the packager's inspection share it."""

from turnout.errors import BadInput
from turnout.scoring.base import Scorer
from turnout.scoring.loader import load_scorer
from turnout.wire import RequestMeta, ScoringRequest, ScoringResult

__all__ = ["BadInput", "RequestMeta", "Scorer", "ScoringRequest", "ScoringResult", "load_scorer"]
