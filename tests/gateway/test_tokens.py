"""Both auth modes end to end, as on Azure: key endpoints take their keys (and refuse tokens, saying so);
aml_token endpoints hand out expiring tokens through get-credentials and renew them for a holder of one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.fakes import InProcess, inprocess, settings_for
from tests.gateway.test_controlplane import deploy
from tests.gateway.test_inprocess import until

pytestmark = pytest.mark.anyio


async def make(gw: InProcess, tmp: Path, name: str, auth_mode: str) -> None:
    created = await gw.http.post("/admin/endpoints", json={"name": name, "auth_mode": auth_mode}, headers=gw.admin)
    assert created.status_code == 201, created.text
    assert (await deploy(gw, tmp, "blue", endpoint=name, all_traffic=True)).status_code == 200


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


async def test_a_key_endpoint_takes_keys_and_says_tokens_are_not_its_mode(tmp_path: Path) -> None:
    async with inprocess(settings_for(tmp_path)) as gw:
        await until(lambda: gw.services.loaded)
        await make(gw, tmp_path, "keyed", "key")
        keys = (await gw.http.post("/admin/endpoints/keyed/credentials", headers=gw.admin)).json()
        assert (await gw.http.post("/endpoints/keyed/score", content=b"{}", headers=bearer(keys["primaryKey"]))).status_code == 200
        refused = await gw.http.post("/endpoints/keyed/token", headers=bearer(keys["primaryKey"]))
        assert refused.status_code == 400
        assert "uses auth_mode key" in refused.json()["error"]["message"]
        assert "Bearer <key>" in refused.json()["error"]["message"]


async def test_an_aml_token_endpoint_hands_out_tokens_and_renews_them(tmp_path: Path) -> None:
    async with inprocess(settings_for(tmp_path, token_ttl_seconds=60)) as gw:
        await until(lambda: gw.services.loaded)
        await make(gw, tmp_path, "tokened", "aml_token")
        credentials = (await gw.http.post("/admin/endpoints/tokened/credentials", headers=gw.admin)).json()
        assert set(credentials) >= {"accessToken", "expiryTimeUtc", "refreshAfterTimeUtc", "tokenType"}
        token = credentials["accessToken"]
        assert (await gw.http.post("/endpoints/tokened/score", content=b"{}", headers=bearer(token))).status_code == 200
        renewed = await gw.http.post("/endpoints/tokened/token", headers=bearer(token))
        assert renewed.status_code == 200, renewed.text
        fresh = renewed.json()["accessToken"]
        assert (await gw.http.post("/endpoints/tokened/score", content=b"{}", headers=bearer(fresh))).status_code == 200
        nothing = await gw.http.post("/endpoints/tokened/token")
        assert nothing.status_code == 401
        key_like = await gw.http.post("/endpoints/tokened/score", content=b"{}", headers=bearer("some-key"))
        assert key_like.status_code == 401
        assert "auth_mode aml_token" in key_like.json()["error"]["message"]
        assert "get-credentials" in key_like.json()["error"]["message"]


async def test_deleting_an_endpoint_or_regenerating_its_keys_revokes_its_tokens(tmp_path: Path) -> None:
    async with inprocess(settings_for(tmp_path, token_ttl_seconds=600)) as gw:
        await until(lambda: gw.services.loaded)
        await make(gw, tmp_path, "tokened", "aml_token")

        async def fresh_token() -> str:
            return str((await gw.http.post("/admin/endpoints/tokened/credentials", headers=gw.admin)).json()["accessToken"])

        async def status(token: str) -> int:
            return (await gw.http.post("/endpoints/tokened/score", content=b"{}", headers=bearer(token))).status_code

        before = await fresh_token()
        assert await status(before) == 200
        await gw.http.post("/admin/endpoints/tokened/regenerate-keys", json={"key_type": "primary"}, headers=gw.admin)
        assert await status(before) == 401
        after = await fresh_token()
        assert await status(after) == 200
        assert (await gw.http.delete("/admin/endpoints/tokened", headers=gw.admin)).status_code == 204
        await make(gw, tmp_path, "tokened", "aml_token")  # the same name, another endpoint
        refused = await gw.http.post("/endpoints/tokened/score", content=b"{}", headers=bearer(after))
        assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
        assert await status(await fresh_token()) == 200
