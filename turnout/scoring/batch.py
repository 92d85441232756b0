"""Azure ML batch scripts: ``init()`` + ``run(mini_batch: list[str]) -> list | pandas.DataFrame``.

One request carries one mini-batch: a JSON list of strings (file paths, usually), or an object
``{"mini_batch": [...]}``. The answer is the list, or the DataFrame as a list of records."""

from __future__ import annotations

from turnout.errors import BadInput, ScriptFailed
from turnout.scoring import codec
from turnout.scoring.base import Scorer
from turnout.scoring.guard import call_user
from turnout.wire import ScoringRequest, ScoringResult


class BatchScorer(Scorer):
    mode = "azure-batch"

    def _score_one(self, request: ScoringRequest) -> ScoringResult:
        payload = codec.loads(request.body)
        if isinstance(payload, dict):
            payload = payload.get("mini_batch")
        if not isinstance(payload, list) or not all(isinstance(item, str) for item in payload):
            raise BadInput('a batch request is a JSON list of strings, or {"mini_batch": [...]}')
        output = call_user(self.module.run, payload, timeout=self.timeout, what=f"run() in {self.script}")
        if not (isinstance(output, list) or hasattr(output, "columns")):
            raise ScriptFailed(
                f"run() in {self.script} returned {type(output).__name__}; a batch run() returns a list "
                "or a pandas.DataFrame"
            )
        return ScoringResult(body=codec.dumps(output))
