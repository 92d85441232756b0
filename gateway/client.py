"""The CLI's HTTP client for the gateway: errors come back as the same TurnoutError the gateway raised."""

from __future__ import annotations

from typing import Any

import httpx

from gateway.routing import DEPLOYMENT_HEADER
from turnout.errors import BY_CODE, NodeUnreachable, TurnoutError


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        cls = BY_CODE.get(error.get("code", ""), TurnoutError)
        raise cls(str(error["message"]), details=error.get("details"))
    except (ValueError, KeyError, TypeError):
        raise TurnoutError(f"HTTP {response.status_code}: {response.text[:500]}") from None


class AdminClient:
    def __init__(self, url: str, admin_key: str, timeout: float = 900.0) -> None:
        self.url = url.rstrip("/")
        self.admin_key = admin_key
        self._http = httpx.Client(base_url=self.url, timeout=timeout,
                                  headers={"Authorization": f"Bearer {admin_key}"})

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise NodeUnreachable(f"the gateway at {self.url} did not answer: {exc}") from None
        _raise_for(response)
        return response

    def get(self, path: str) -> Any:
        return self._send("GET", path).json()

    def raw(self, path: str) -> bytes:
        return self._send("GET", path).content

    def text(self, path: str, params: dict[str, str] | None = None) -> str:
        return self._send("GET", path, params=params).text

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._send("POST", path, json=body).json()

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self._send("PATCH", path, json=body).json()

    def delete(self, path: str) -> None:
        self._send("DELETE", path)

    def put_archive(self, path: str, archive: bytes, params: dict[str, str]) -> Any:
        return self._send("PUT", path, content=archive, params=params,
                          headers={"Content-Type": "application/gzip"}).json()

    def invoke(self, endpoint: str, body: bytes, deployment: str | None) -> tuple[int, str, str]:
        headers = {"Content-Type": "application/json"}
        if deployment:
            headers[DEPLOYMENT_HEADER] = deployment
        try:
            response = self._http.post(f"/endpoints/{endpoint}/score", content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise NodeUnreachable(f"the gateway at {self.url} did not answer: {exc}") from None
        return response.status_code, response.headers.get(DEPLOYMENT_HEADER, "-"), response.text
