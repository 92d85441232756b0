"""Triton's HTTP/REST protocol with the binary tensor extension, for python_scoring entries.

The request bodies travel as raw bytes after a small JSON header (``Inference-Header-Content-Length``),
so the gateway never decodes or escapes what the caller sent; the answers come back the same way. One
Triton request carries one or more scoring requests (shape ``[n, 1]``, see :mod:`gateway.coalesce`);
the backend answers each element on its own, a failed one with ``{"error": <wire error>}`` as its META.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import orjson

from turnout.errors import ScriptFailed, TurnoutError, from_wire
from turnout.scoring.request import ScoringResult

HEADER_LENGTH = "Inference-Header-Content-Length"
_U32 = struct.Struct("<I")
# The inputs/outputs around the sizes never change: build the JSON header from fixed pieces.
_HEAD = b'{"inputs":[{"name":"BODY","datatype":"BYTES","shape":[%d,1],"parameters":{"binary_data_size":%d}},' \
        b'{"name":"META","datatype":"BYTES","shape":[%d,1],"parameters":{"binary_data_size":%d}}],' \
        b'"outputs":[{"name":"BODY","parameters":{"binary_data":true}},{"name":"META","parameters":{"binary_data":true}}]}'

Answer = ScoringResult | TurnoutError


def encode_batch(items: Sequence[tuple[bytes, bytes]]) -> tuple[bytes, int]:
    """Return the HTTP body and the JSON header's length for scoring requests given as (body, meta)."""
    pack = _U32.pack
    bodies = b"".join(pack(len(body)) + body for body, _ in items)
    metas = b"".join(pack(len(meta)) + meta for _, meta in items)
    header = _HEAD % (len(items), len(bodies), len(items), len(metas))
    return b"".join((header, bodies, metas)), len(header)


def encode_request(body: bytes, meta: bytes) -> tuple[bytes, int]:
    return encode_batch(((body, meta),))


def _elements(blob: bytes, start: int, size: int) -> list[bytes]:
    """The elements of one binary BYTES tensor (each a little-endian u32 length, then the bytes)."""
    parts, offset, end = [], start, start + size
    while offset < end:
        (length,) = _U32.unpack_from(blob, offset)
        offset += 4
        parts.append(blob[offset:offset + length])
        offset += length
    if offset != end:
        raise ScriptFailed("Triton returned a malformed BYTES tensor")
    return parts


def _answer(body: bytes, meta: bytes) -> Answer:
    info = orjson.loads(meta)
    if "error" in info:
        return from_wire(str(info["error"])) or ScriptFailed(str(info["error"]))
    return ScoringResult(
        body=body, status=int(info["status"]), content_type=str(info["content_type"]), headers=dict(info["headers"])
    )


def decode_batch(payload: bytes, header_length: int | None, count: int) -> list[Answer]:
    """Parse Triton's answer to :func:`encode_batch` (binary outputs, or plain JSON without the header
    length): one scoring result or error per request sent."""
    if header_length is None:
        outputs = {o["name"]: o["data"] for o in orjson.loads(payload)["outputs"]}
        bodies = [str(x).encode() for x in outputs["BODY"]]
        metas = [str(x).encode() for x in outputs["META"]]
    else:
        header: dict[str, Any] = orjson.loads(payload[:header_length])
        offset, parts = header_length, {}
        for output in header["outputs"]:
            size = int(output["parameters"]["binary_data_size"])
            parts[output["name"]] = _elements(payload, offset, size)
            offset += size
        bodies, metas = parts["BODY"], parts["META"]
    if len(bodies) != count or len(metas) != count:
        raise ScriptFailed(f"Triton answered {len(bodies)} results to {count} requests")
    return [_answer(body, meta) for body, meta in zip(bodies, metas, strict=True)]


def only(answers: list[Answer]) -> ScoringResult:
    """The answer to a one-element request; raised when it is an error."""
    (answer,) = answers
    if isinstance(answer, TurnoutError):
        raise answer
    return answer
