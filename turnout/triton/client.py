"""A small synchronous client for one Triton node: repository control and JSON scoring over HTTP.

Used by the packager and by tests; the gateway's hot path has its own pooled async client. Close it (or
use it as a context manager) before stopping Triton: an idle keep-alive connection blocks Triton's exit.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from turnout import wire
from turnout.errors import NodeUnreachable, NotFound, ScriptLoadError, TurnoutError, from_wire
from turnout.wire import RequestMeta, ScoringResult


class TritonClient:
    def __init__(self, url: str, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise NodeUnreachable(f"Triton at {self.url} did not answer {method} {path}: {exc}") from exc

    def load(self, entry: str, config: dict[str, Any] | None = None) -> None:
        """Load (or reload) an entry; raises ScriptLoadError with Triton's reason when it fails."""
        body = {"parameters": {"config": json.dumps(config)}} if config else {}
        response = self._request("POST", f"/v2/repository/models/{entry}/load", json=body)
        if response.status_code != 200:
            raise ScriptLoadError(f"{entry} failed to load: {_error_text(response)}")

    def unload(self, entry: str) -> None:
        response = self._request("POST", f"/v2/repository/models/{entry}/unload", json={})
        if response.status_code != 200:
            raise TurnoutError(f"{entry} failed to unload: {_error_text(response)}")

    def is_ready(self, entry: str) -> bool:
        return self._request("GET", f"/v2/models/{entry}/ready").status_code == 200

    def index(self) -> list[dict[str, Any]]:
        response = self._request("POST", "/v2/repository/index", json={})
        response.raise_for_status()
        return list(response.json())

    def stats(self, entry: str) -> dict[str, Any]:
        response = self._request("GET", f"/v2/models/{entry}/stats")
        if response.status_code != 200:
            raise NotFound(f"no statistics for {entry}: {_error_text(response)}")
        return dict(response.json())

    def score(self, entry: str, body: bytes, meta: RequestMeta | None = None) -> ScoringResult:
        """Send one request body to a python_scoring entry; a failed request raises its TurnoutError."""
        meta = meta or RequestMeta()
        facts = wire.encode_request_meta(meta.method, meta.query, meta.headers, inline_errors=False, path=meta.path)
        response = self._request("POST", f"/v2/models/{entry}/infer", json=wire.json_infer_request(body, facts))
        if response.status_code != 200:
            text = _error_text(response)
            raise from_wire(text) or TurnoutError(f"Triton answered {response.status_code}: {text}")
        return wire.only(wire.decode_batch(response.content, None, 1))


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text
