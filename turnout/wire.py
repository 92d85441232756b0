"""The wire contract between the gateway (or any Triton client) and the python_scoring backend.

Every python_scoring entry has the same tensors (``max_batch_size > 0``, so each has a leading batch axis):

  inputs   BODY  BYTES [n, 1]            request bodies, one element per scoring request
           META  BYTES [n, 1], optional  JSON request facts: {"method", "path", "query", "headers"}
  outputs  BODY  BYTES [n, 1]            response bodies
           META  BYTES [n, 1]            JSON answer facts: {"status", "content_type", "headers"},
                                         or {"error": <wire error>} for an element that failed alone

Two flags ride in the first element's META, always as its first key so the backend tests a prefix
instead of parsing: ``"probe": true`` (the gateway's health probe; answered by the stub without user
code) and ``"inline_errors": true`` (answer each failed element in its own META instead of failing the
whole Triton request: several callers coalesced into one request then keep their own errors).

This module is part of the slim scoring runtime (see :mod:`turnout.runtime`): stdlib and orjson only.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import orjson

from turnout.errors import BadInput, ScriptFailed, TurnoutError, from_wire

BODY = "BODY"
META = "META"
JSON_CONTENT_TYPE = "application/json"

PROBE_META = b'{"probe":true}'
_PROBE_PREFIX = b'{"probe":true'
_INLINE_PREFIX = b'{"inline_errors":true'


@dataclass(frozen=True)
class RequestMeta:
    """The HTTP facts a script may need (Azure's @rawhttp, content-type checks). Defaults fit a plain
    JSON POST, which is what a client calling Triton directly sends."""

    method: str = "POST"
    path: str = "/score"
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        for key, value in self.headers.items():
            if key.lower() == "content-type":
                return value
        return JSON_CONTENT_TYPE

    @property
    def is_json(self) -> bool:
        mimetype = self.content_type.split(";", 1)[0].strip().lower()
        return mimetype == JSON_CONTENT_TYPE or mimetype.endswith("+json")


@dataclass(frozen=True)
class ScoringRequest:
    body: bytes
    meta: RequestMeta = field(default_factory=RequestMeta)


@dataclass(frozen=True)
class ScoringResult:
    body: bytes
    status: int = 200
    content_type: str = JSON_CONTENT_TYPE
    headers: dict[str, str] = field(default_factory=dict)


# What one element of a Triton answer is: a result, or the error that failed that element alone.
Answer = Union[ScoringResult, TurnoutError]  # noqa: UP007 (a runtime alias; the stub may run Python 3.10)


# --- request META ---------------------------------------------------------------------------------------

def encode_request_meta(method: str, query: str, headers: Mapping[str, str], *, inline_errors: bool = True,
                        path: str = "/score") -> bytes:
    facts: dict[str, Any] = {"inline_errors": True} if inline_errors else {}
    facts.update(method=method, path=path, query=query, headers=dict(headers))
    return orjson.dumps(facts)


def is_probe(first_meta: bytes) -> bool:
    return first_meta.startswith(_PROBE_PREFIX)


def wants_inline_errors(first_meta: bytes) -> bool:
    return first_meta.startswith(_INLINE_PREFIX)


def decode_request_meta(raw: bytes | None) -> RequestMeta:
    if not raw:
        return RequestMeta()
    try:
        fields = orjson.loads(raw)
        return RequestMeta(
            method=str(fields.get("method", "POST")).upper(),
            path=str(fields.get("path", "/score")),
            query=str(fields.get("query", "")),
            headers={str(k): str(v) for k, v in dict(fields.get("headers", {})).items()},
        )
    except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
        raise BadInput(f"the META input is not a JSON object of request facts: {exc}") from None


# --- answer META ----------------------------------------------------------------------------------------

def encode_answer_meta(answer: Answer) -> bytes:
    if isinstance(answer, TurnoutError):
        return orjson.dumps({"error": answer.to_wire()})
    return orjson.dumps({"status": answer.status, "content_type": answer.content_type, "headers": answer.headers})


def decode_answer(body: bytes, meta: bytes) -> Answer:
    try:
        info = orjson.loads(meta)
        if "error" in info:
            return from_wire(str(info["error"])) or ScriptFailed(str(info["error"]))
        return ScoringResult(body=body, status=int(info["status"]), content_type=str(info["content_type"]),
                             headers=dict(info["headers"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return ScriptFailed("the backend answered with a malformed META output")


def only(answers: Sequence[Answer]) -> ScoringResult:
    """The answer to a one-element request; raised when it is an error."""
    (answer,) = answers
    if isinstance(answer, TurnoutError):
        raise answer
    return answer


# --- Triton's HTTP protocol with the binary tensor extension ----------------------------------------------
# Bodies travel as raw bytes after a small JSON header (``Inference-Header-Content-Length``): nothing the
# caller sent is decoded or escaped on the way.

HEADER_LENGTH = "Inference-Header-Content-Length"
_U32 = struct.Struct("<I")
_HEAD = (b'{"inputs":[{"name":"BODY","datatype":"BYTES","shape":[%d,1],"parameters":{"binary_data_size":%d}},'
         b'{"name":"META","datatype":"BYTES","shape":[%d,1],"parameters":{"binary_data_size":%d}}],'
         b'"outputs":[{"name":"BODY","parameters":{"binary_data":true}},'
         b'{"name":"META","parameters":{"binary_data":true}}]}')


def encode_batch(items: Sequence[tuple[bytes, bytes]]) -> tuple[bytes, int]:
    """The HTTP body and its JSON header's length for scoring requests given as (body, meta)."""
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


def decode_batch(payload: bytes, header_length: int | None, count: int) -> list[Answer]:
    """Parse Triton's answer to :func:`encode_batch` (binary outputs, or plain JSON without the header
    length): one scoring result or error per request sent."""
    if header_length is None:
        outputs = {o["name"]: o["data"] for o in orjson.loads(payload)["outputs"]}
        bodies = [str(x).encode() for x in outputs[BODY]]
        metas = [str(x).encode() for x in outputs[META]]
    else:
        header: dict[str, Any] = orjson.loads(payload[:header_length])
        offset, parts = header_length, {}
        for output in header["outputs"]:
            size = int(output["parameters"]["binary_data_size"])
            parts[output["name"]] = _elements(payload, offset, size)
            offset += size
        bodies, metas = parts[BODY], parts[META]
    if len(bodies) != count or len(metas) != count:
        raise ScriptFailed(f"Triton answered {len(bodies)} results to {count} requests")
    return [decode_answer(body, meta) for body, meta in zip(bodies, metas, strict=True)]


def json_infer_request(body: bytes, meta: bytes) -> dict[str, Any]:
    """One scoring request in Triton's plain JSON protocol (clients without the binary extension)."""
    return {"inputs": [
        {"name": BODY, "datatype": "BYTES", "shape": [1, 1], "data": [body.decode("utf-8", "replace")]},
        {"name": META, "datatype": "BYTES", "shape": [1, 1], "data": [meta.decode("utf-8")]},
    ]}
