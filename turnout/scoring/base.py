"""What every scoring mode provides to the backend."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from types import ModuleType

from turnout.errors import ScriptFailed, TurnoutError
from turnout.wire import ScoringRequest, ScoringResult

log = logging.getLogger("turnout.scoring")


class Scorer(ABC):
    """One loaded scoring script in one mode. ``score`` takes the requests of one Triton execute()
    (a dynamic batch) and answers each one: a result, or the error that failed that request alone."""

    mode: str

    def __init__(self, module: ModuleType, script: str, timeout: float) -> None:
        self.module = module
        self.script = script
        self.timeout = timeout

    def describe(self) -> str:
        return self.mode

    def score(self, requests: list[ScoringRequest]) -> list[ScoringResult | TurnoutError]:
        results: list[ScoringResult | TurnoutError] = []
        for request in requests:
            try:
                results.append(self._score_one(request))
            except TurnoutError as exc:
                self.log_failure(exc)
                results.append(exc)
        return results

    @abstractmethod
    def _score_one(self, request: ScoringRequest) -> ScoringResult:
        """Score one request; modes that batch across requests override ``score`` instead."""

    def log_failure(self, exc: TurnoutError) -> None:
        # The traceback of a script failure goes to the logs only, never to the caller.
        if isinstance(exc, ScriptFailed) and exc.__cause__ is not None:
            log.error("%s: %s", self.script, exc.message, exc_info=exc.__cause__)
        else:
            log.warning("%s: request failed: %s", self.script, exc.message)
