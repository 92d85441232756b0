"""Credentials: endpoint keys, expiring tokens, and the admin credential.

Keys are random 256-bit strings. The gateway compares a presented key with the stored sha256 of each key in
constant time; it also keeps each key sealed with its own secret so an admin can read it back
(``get-credentials``, as on Azure). Tokens are ``payload.signature`` with an HMAC-SHA256 signature over the
endpoint name and expiry time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken

from turnout.errors import Forbidden, Unauthorized

AUTH_MODES = ("key", "aml_token", "none")


def _read_or_create(path: Path, make: bytes) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(make)
    return make


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Token:
    """Bound to the endpoint's name, its identity (a recreated endpoint is another) and its key generation
    (regenerating keys revokes the tokens issued before)."""

    endpoint: str
    expires_at: int
    identity: tuple[str, int] = ("", 0)


class Credentials:
    """The gateway's secrets, kept in its state folder (mode 0600)."""

    def __init__(self, state_dir: Path, admin_key: str | None = None) -> None:
        secret = _read_or_create(state_dir / "secret.key", base64.urlsafe_b64encode(secrets.token_bytes(32)))
        raw = base64.urlsafe_b64decode(secret)
        self._signing = hashlib.sha256(raw + b"turnout-token").digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(raw + b"turnout-keys").digest()))
        if admin_key is None:
            admin_key = _read_or_create(state_dir / "admin.key", new_key().encode()).decode()
        self.admin_key = admin_key
        self._admin_hash = hash_key(admin_key)
        self.admin_key_file = state_dir / "admin.key"

    # --- keys ---
    def seal(self, key: str) -> str:
        return self._fernet.encrypt(key.encode()).decode()

    def unseal(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise Forbidden("stored keys were sealed with another gateway secret; regenerate them") from None

    def is_admin(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(hash_key(presented), self._admin_hash)

    # --- tokens ---
    def issue_token(self, endpoint: str, ttl_seconds: int, identity: tuple[str, int] = ("", 0)) -> Token:
        return Token(endpoint, int(time.time()) + ttl_seconds, identity)

    def endpoint_credentials(self, endpoint: str, auth_mode: str, sealed_keys: list[str], ttl_seconds: int,
                             identity: tuple[str, int]) -> dict[str, Any]:
        """What ``get-credentials`` answers, as Azure does: a fresh token (aml_token), else the two keys."""
        if auth_mode == "aml_token":
            token = self.issue_token(endpoint, ttl_seconds, identity)
            expiry = datetime.fromtimestamp(token.expires_at, UTC)
            refresh = datetime.fromtimestamp(token.expires_at - ttl_seconds / 2, UTC)
            return {"accessToken": self.encode_token(token), "tokenType": "Bearer",
                    "expiryTimeUtc": expiry.isoformat(), "refreshAfterTimeUtc": refresh.isoformat()}
        keys = [self.unseal(k) for k in sealed_keys]
        return {"primaryKey": keys[0], "secondaryKey": keys[1]}

    def encode_token(self, token: Token) -> str:
        fields = {"e": token.endpoint, "x": token.expires_at, "u": token.identity[0], "g": token.identity[1]}
        payload = base64.urlsafe_b64encode(orjson.dumps(fields)).rstrip(b"=")
        signature = base64.urlsafe_b64encode(hmac.new(self._signing, payload, hashlib.sha256).digest()).rstrip(b"=")
        return f"{payload.decode()}.{signature.decode()}"

    def decode_token(self, text: str) -> Token | None:
        """The token, if ``text`` is one this gateway signed; expiry is checked by the caller."""
        payload, _, signature = text.partition(".")
        if not signature:
            return None
        expected = base64.urlsafe_b64encode(hmac.new(self._signing, payload.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected.rstrip(b"=").decode(), signature):
            return None
        try:
            fields = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            return Token(str(fields["e"]), int(fields["x"]), (str(fields.get("u", "")), int(fields.get("g", -1))))
        except (ValueError, KeyError, TypeError):
            return None


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return authorization.strip() or None  # Azure clients also send the bare key
    return value.strip()


def check_endpoint_access(
    credentials: Credentials,
    endpoint: str,
    auth_mode: str,
    key_hashes: tuple[str, ...],
    presented: str | None,
    identity: tuple[str, int] = ("", 0),
) -> None:
    """Raise Unauthorized (no or bad credential) or Forbidden (a valid credential not good here).

    As on Azure: a ``key`` endpoint takes its two keys; an ``aml_token`` endpoint takes the expiring tokens
    that ``get-credentials`` hands out and ``POST /endpoints/{e}/token`` renews; the admin key opens both."""
    if auth_mode == "none":
        return
    if presented is None:
        wanted = "token" if auth_mode == "aml_token" else "key"
        raise Unauthorized(f"endpoint {endpoint!r} needs 'Authorization: Bearer <{wanted}>'")
    if credentials.is_admin(presented):
        return
    token = credentials.decode_token(presented)
    if token is not None:
        if token.endpoint != endpoint:
            raise Forbidden(f"this token was issued for endpoint {token.endpoint!r}, not {endpoint!r}")
        if auth_mode != "aml_token":
            raise Forbidden(f"endpoint {endpoint!r} uses auth_mode key: send 'Authorization: Bearer <key>' "
                            "('gateway endpoint get-credentials' gives its keys); tokens are for aml_token endpoints")
        if token.identity != identity:
            raise Unauthorized(f"the token was revoked (endpoint {endpoint!r} was recreated or its keys regenerated); "
                               f"get a new one with 'gateway endpoint get-credentials -n {endpoint}'")
        if token.expires_at < time.time():
            raise Unauthorized(f"the token has expired; get a new one ('gateway endpoint get-credentials -n "
                               f"{endpoint}', or POST /endpoints/{endpoint}/token with a valid one)")
        return
    if auth_mode == "aml_token":
        raise Unauthorized(f"endpoint {endpoint!r} uses auth_mode aml_token: send 'Authorization: Bearer <token>' "
                           f"('gateway endpoint get-credentials -n {endpoint}' gives one; POST "
                           f"/endpoints/{endpoint}/token with a valid one renews it)")
    presented_hash = hash_key(presented)
    matched = False
    for stored in key_hashes:
        matched |= hmac.compare_digest(presented_hash, stored)
    if not matched:
        raise Unauthorized(f"the key is not valid for endpoint {endpoint!r}")
