"""Endpoint credentials: keys, tokens, the admin key, and which failure is 401 and which 403."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.auth import Credentials, Token, bearer, check_endpoint_access, hash_key
from turnout.errors import Forbidden, Unauthorized


@pytest.fixture
def credentials(tmp_path: Path) -> Credentials:
    return Credentials(tmp_path, admin_key="the-admin-key")


def test_keys_and_the_admin_key_open_a_key_endpoint(credentials: Credentials) -> None:
    keys = (hash_key("k1"), hash_key("k2"))
    for presented in ("k1", "k2", "the-admin-key"):
        check_endpoint_access(credentials, "e", "key", keys, presented)
    with pytest.raises(Unauthorized, match="not valid for endpoint 'e'"):
        check_endpoint_access(credentials, "e", "key", keys, "k3")
    with pytest.raises(Unauthorized, match="needs 'Authorization: Bearer"):
        check_endpoint_access(credentials, "e", "key", keys, None)


def test_tokens_are_bound_to_their_endpoint_and_expire(credentials: Credentials) -> None:
    token = credentials.encode_token(credentials.issue_token("e", 60))
    check_endpoint_access(credentials, "e", "aml_token", (), token)
    with pytest.raises(Forbidden, match="issued for endpoint 'e', not 'f'"):
        check_endpoint_access(credentials, "f", "aml_token", (), token)
    expired = credentials.encode_token(Token("e", int(time.time()) - 1))
    with pytest.raises(Unauthorized, match="expired"):
        check_endpoint_access(credentials, "e", "aml_token", (), expired)
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(Unauthorized):
        check_endpoint_access(credentials, "e", "aml_token", (), forged)


def test_each_mode_says_which_credential_it_takes(credentials: Credentials) -> None:
    with pytest.raises(Unauthorized, match=r"uses auth_mode aml_token: send 'Authorization: Bearer <token>'"):
        check_endpoint_access(credentials, "e", "aml_token", (hash_key("k1"),), "k1")
    token = credentials.encode_token(credentials.issue_token("e", 60))
    with pytest.raises(Forbidden, match=r"uses auth_mode key: send 'Authorization: Bearer <key>'"):
        check_endpoint_access(credentials, "e", "key", (hash_key("k1"),), token)


def test_keys_are_sealed_and_the_secret_is_private(credentials: Credentials, tmp_path: Path) -> None:
    sealed = credentials.seal("k1")
    assert "k1" not in sealed and credentials.unseal(sealed) == "k1"
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    assert bearer("Bearer abc") == bearer("abc") == "abc" and bearer(None) is None
