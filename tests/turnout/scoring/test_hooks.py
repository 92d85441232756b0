"""HooksScorer without Triton: stacking, splitting, per-request failures."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from turnout.errors import BadInput, ScriptFailed
from turnout.scoring.hooks import HooksScorer
from turnout.wire import RequestMeta, ScoringRequest


def scorer(**hooks) -> HooksScorer:  # type: ignore[no-untyped-def]
    return HooksScorer(SimpleNamespace(**hooks), "score.py", timeout=5)


def req(body: bytes) -> ScoringRequest:
    return ScoringRequest(body)


def test_arrays_are_stacked_into_one_predict_and_split_back() -> None:
    calls = []

    def predict(batch):  # type: ignore[no-untyped-def]
        calls.append(batch.shape)
        return batch.sum(axis=1)

    s = scorer(preprocess=lambda p: np.asarray(p, dtype=np.float32), predict=predict)
    results = s.score([req(b"[[1, 2]]"), req(b"[[3, 4], [5, 6]]")])
    assert calls == [(3, 2)]
    assert [r.body for r in results] == [b"[3.0]", b"[7.0,11.0]"]


def test_torch_tensors_and_dict_outputs_are_split() -> None:
    s = scorer(
        preprocess=lambda p: torch.tensor(p, dtype=torch.float32),
        predict=lambda b: {"double": b * 2, "first": b[:, 0]},
    )
    results = s.score([req(b"[[1, 2]]"), req(b"[[3, 4]]")])
    assert [r.body for r in results] == [b'{"double":[[2.0,4.0]],"first":[1.0]}', b'{"double":[[6.0,8.0]],"first":[3.0]}']


def test_unstackable_inputs_reach_predict_as_a_list() -> None:
    seen = []

    def predict(items):  # type: ignore[no-untyped-def]
        seen.append(items)
        return [item["v"] * 10 for item in items]

    results = scorer(predict=predict).score([req(b'{"v": 1}'), req(b'{"v": 2}')])
    assert seen == [[{"v": 1}, {"v": 2}]]
    assert [r.body for r in results] == [b"10", b"20"]


def test_a_failing_preprocess_fails_only_its_request() -> None:
    def preprocess(p):  # type: ignore[no-untyped-def]
        if p == "bad":
            raise BadInput("bad payload")
        return p

    results = scorer(preprocess=preprocess).score([req(b'"ok"'), req(b'"bad"'), req(b"{broken")])
    assert results[0].body == b'"ok"'
    assert isinstance(results[1], BadInput) and results[1].message == "bad payload"
    assert isinstance(results[2], BadInput) and "not valid JSON" in results[2].message


def test_predict_returning_the_wrong_length_is_the_scripts_failure() -> None:
    results = scorer(predict=lambda items: [1]).score([req(b"1"), req(b"2")])
    assert all(isinstance(r, ScriptFailed) and "must return a list of 2" in r.message for r in results)
    stacked = scorer(preprocess=lambda p: np.ones((1, 2)), predict=lambda b: b[:1]).score([req(b"1"), req(b"2")])
    assert all(isinstance(r, ScriptFailed) and "expected 2 rows" in r.message for r in stacked)


def test_undeclared_or_form_bodies_that_are_json_are_parsed() -> None:
    s = scorer(preprocess=lambda p: {"type": type(p).__name__})
    for content_type in ("application/x-www-form-urlencoded", "text/plain"):  # curl -d, and plain text
        meta = RequestMeta(headers={"Content-Type": content_type})
        assert s.score([ScoringRequest(b'{"data": 1}', meta)])[0].body == b'{"type":"dict"}'
        assert s.score([ScoringRequest(b"a=1&b=2", meta)])[0].body == b'{"type":"bytes"}'


def test_non_json_media_reaches_preprocess_as_bytes() -> None:
    s = scorer(preprocess=lambda p: {"size": len(p), "type": type(p).__name__})
    result = s.score([ScoringRequest(b"\x89PNG", RequestMeta(headers={"Content-Type": "image/png"}))])[0]
    assert result.body == b'{"size":4,"type":"bytes"}'


def test_hooks_postprocess_failure_is_a_script_failure() -> None:
    results = scorer(postprocess=lambda o: 1 / 0).score([req(b"1")])
    assert isinstance(results[0], ScriptFailed) and "ZeroDivisionError" in results[0].message
    with pytest.raises(ScriptFailed):
        scorer(postprocess=lambda o: {1, 2})._score_one(req(b"1"))


# Written the way a TorchServe or KServe user writes a handler: preprocess turns one request into its
# feature vector, predict stacks the batch itself and scores it, postprocess shapes one answer.
TORCHSERVE_STYLE = '''
import numpy as np

WEIGHTS = np.arange(1, 9, dtype=np.float32)

def preprocess(payload):
    return np.asarray(payload["features"], dtype=np.float32)   # shape (8,)

def predict(inputs):
    batch = np.stack(inputs)                                   # (n, 8)
    return batch @ WEIGHTS                                     # (n,)

def postprocess(score):
    return {"score": float(score)}
'''


def test_a_one_dimensional_feature_vector_is_one_row() -> None:
    module = SimpleNamespace()
    exec(TORCHSERVE_STYLE, module.__dict__)  # noqa: S102 (a scoring script, as the loader would run it)
    seen = []
    predict = module.predict
    module.predict = lambda inputs: seen.append(np.shape(inputs)) or predict(inputs)
    s = HooksScorer(module, "score.py", timeout=5)
    bodies = [b'{"features": [1, 0, 0, 0, 0, 0, 0, 0]}', b'{"features": [0, 1, 0, 0, 0, 0, 0, 0]}',
              b'{"features": [1, 1, 1, 1, 1, 1, 1, 1]}']
    results = s.score([req(b) for b in bodies])
    assert seen == [(3, 8)]  # one predict, one row per request
    assert [r.body for r in results] == [b'{"score":1.0}', b'{"score":2.0}', b'{"score":36.0}']


def test_one_dimensional_rows_and_two_dimensional_batches_mix() -> None:
    s = scorer(preprocess=lambda p: np.asarray(p, dtype=np.float32), predict=lambda b: b.sum(axis=1))
    results = s.score([req(b"[1, 2]"), req(b"[[3, 4], [5, 6]]")])
    assert [r.body for r in results] == [b"3.0", b"[7.0,11.0]"]  # a row's own output; a batch's rows
