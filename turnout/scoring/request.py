"""What one scoring call receives and returns, independent of Triton and HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field

JSON_CONTENT_TYPE = "application/json"


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
