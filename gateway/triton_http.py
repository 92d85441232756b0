"""Triton's HTTP/REST protocol with the binary tensor extension, for python_scoring entries.

The request body travels as raw bytes after a small JSON header (``Inference-Header-Content-Length``),
so the gateway never decodes or escapes what the caller sent; the answer comes back the same way.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

from turnout.errors import ScriptFailed
from turnout.scoring.request import ScoringResult

HEADER_LENGTH = "Inference-Header-Content-Length"
_U32 = struct.Struct("<I")
# The inputs/outputs around the two sizes never change: build the JSON header from fixed pieces.
_HEAD_A = b'{"inputs":[{"name":"BODY","datatype":"BYTES","shape":[1,1],"parameters":{"binary_data_size":'
_HEAD_B = b'}},{"name":"META","datatype":"BYTES","shape":[1,1],"parameters":{"binary_data_size":'
_HEAD_C = (
    b'}}],"outputs":[{"name":"BODY","parameters":{"binary_data":true}},'
    b'{"name":"META","parameters":{"binary_data":true}}]}'
)


def encode_request(body: bytes, meta: bytes) -> tuple[bytes, int]:
    """Return the HTTP body and the JSON header's length for one scoring request."""
    header = b"".join((_HEAD_A, str(len(body) + 4).encode(), _HEAD_B, str(len(meta) + 4).encode(), _HEAD_C))
    return b"".join((header, _U32.pack(len(body)), body, _U32.pack(len(meta)), meta)), len(header)


def _element(blob: bytes, start: int, size: int) -> bytes:
    (length,) = _U32.unpack_from(blob, start)
    if length + 4 != size:
        raise ScriptFailed("Triton returned a BYTES tensor with more than one element")
    return blob[start + 4:start + size]


def decode_response(payload: bytes, header_length: int | None) -> ScoringResult:
    """Parse Triton's answer (binary outputs, or plain JSON when the header length is absent)."""
    if header_length is None:
        outputs = {o["name"]: o["data"][0] for o in orjson.loads(payload)["outputs"]}
        body, meta = str(outputs["BODY"]).encode(), str(outputs["META"]).encode()
    else:
        header: dict[str, Any] = orjson.loads(payload[:header_length])
        offset, parts = header_length, {}
        for output in header["outputs"]:
            size = int(output["parameters"]["binary_data_size"])
            parts[output["name"]] = _element(payload, offset, size)
            offset += size
        body, meta = parts["BODY"], parts["META"]
    info = orjson.loads(meta)
    return ScoringResult(
        body=body, status=int(info["status"]), content_type=str(info["content_type"]), headers=dict(info["headers"])
    )
