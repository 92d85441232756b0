"""JSON in and out of scoring scripts: fast (orjson), numpy/torch/pandas aware, with Turnout's errors."""

from __future__ import annotations

from typing import Any

import orjson

from turnout.errors import BadInput, ScriptFailed

_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _default(obj: Any) -> Any:
    # numpy arrays orjson cannot take natively (non-contiguous, float16, object) and numpy scalars
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):
        return obj.tolist()
    if hasattr(obj, "detach") and hasattr(obj, "cpu"):  # torch.Tensor
        return obj.detach().cpu().tolist()
    if hasattr(obj, "numpy") and callable(obj.numpy):  # tf.Tensor
        return obj.numpy().tolist()
    if hasattr(obj, "to_dict") and hasattr(obj, "columns"):  # pandas.DataFrame
        return obj.to_dict(orient="records")
    if hasattr(obj, "to_list") and hasattr(obj, "index"):  # pandas.Series
        return obj.to_list()
    if isinstance(obj, (bytes, bytearray)):
        return obj.decode("utf-8", "replace")
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


def dumps(obj: Any) -> bytes:
    """Serialise what a script returned; a value JSON cannot hold is the script's failure."""
    try:
        return orjson.dumps(obj, default=_default, option=_DUMP_OPTIONS)
    except TypeError as exc:
        raise ScriptFailed(f"the scoring script returned a value that is not JSON-serialisable: {exc}") from exc


def loads(body: bytes) -> Any:
    """Parse a request body; malformed JSON is the caller's error."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if not body.strip():
            raise BadInput("the request body is empty; expected JSON") from None
        raise BadInput(f"the request body is not valid JSON: {exc}") from None
