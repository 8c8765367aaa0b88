"""The plan's period governs OAuth tokens too, from each token's own generation time."""

from __future__ import annotations

import pytest

from tests.helpers import create_gateway_client, introspect, set_period
from tests.oauth2.conftest import REDIRECT
from tests.oauth2.test_security import get_code, pkce, token

pytestmark = pytest.mark.asyncio


async def code_pair(client, browser, plan, custom) -> dict:  # noqa: ANN001
    verifier, challenge = pkce()
    code = await get_code(browser, plan, custom, challenge)
    r = await token(client, custom, grant_type="authorization_code", code=code,
                    redirect_uri=REDIRECT, code_verifier=verifier)
    assert r.status_code == 200, r.text
    return r.json()


async def test_period_shorter_than_access_lifetime_bounds_expires_in(client, plan,
                                                                     custom) -> None:
    await set_period(client, plan, 30, "minutes")
    r = await token(client, custom, grant_type="client_credentials")
    assert r.status_code == 200 and r.json()["expires_in"] == 1800


async def test_a_refresh_never_outlives_its_grant(client, browser, plan, custom,
                                                  clock) -> None:
    """Rule 11: a refreshed pair keeps the grant's original generation time, so the plan's
    period bounds the grant as a whole: refreshing cannot keep it alive past the period."""
    gateway = await create_gateway_client(client, plan)
    await set_period(client, plan, 2, "hours")
    first = await code_pair(client, browser, plan, custom)
    granted = (await introspect(client, gateway, first["refresh_token"]))["iat"]
    clock.advance(minutes=90)
    r = await token(client, custom, grant_type="refresh_token",
                    refresh_token=first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["expires_in"] == 30 * 60  # what is left of the grant, not a new hour
    answer = await introspect(client, gateway, second["refresh_token"])
    assert answer["iat"] == granted and answer["exp"] - granted == 7200
    clock.advance(minutes=30)  # two hours after the grant
    assert await introspect(client, gateway, second["access_token"]) == {"active": False}
    assert await introspect(client, gateway, second["refresh_token"]) == {"active": False}
    r = await token(client, custom, grant_type="refresh_token",
                    refresh_token=second["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert "expired" in r.json()["error_description"]


async def test_expired_refresh_token_cannot_be_used(client, browser, plan, custom,
                                                    clock) -> None:
    pair = await code_pair(client, browser, plan, custom)
    await set_period(client, plan, 1, "hours")
    clock.advance(hours=1)
    r = await token(client, custom, grant_type="refresh_token",
                    refresh_token=pair["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert "expired" in r.json()["error_description"]


async def test_admin_generated_integration_token(client, plan, other_plan, custom,
                                                 clock) -> None:
    gateway = await create_gateway_client(client, plan)
    url = f"/v1/plans/{plan.plan_id}/integrations/{custom.id}/tokens"
    r = await client.post(url, json={"name": "nightly sync", "scopes": ["data:read"]},
                          headers=plan.admin.auth)
    assert r.status_code == 201, r.text
    issued = r.json()
    assert issued["token"].startswith("tsi_") and issued["kind"] == "integration"
    assert issued["scopes"] == ["data:read"] and issued["expires_at"] is None
    answer = await introspect(client, gateway, issued["token"])
    assert answer["client_id"] == custom.client_id and answer["sub"] == custom.client_id

    # It acts for the plan with its scopes on the API, and obeys the plan's period.
    api = {"Authorization": f"Bearer {issued['token']}"}
    assert (await client.get("/v1/me", headers=api)).status_code == 403
    await set_period(client, plan, 1, "days")
    clock.advance(days=1)
    assert await introspect(client, gateway, issued["token"]) == {"active": False}

    member = await plan.add_user()
    assert (await client.post(url, json={}, headers=member.auth)).status_code == 403
    assert (await client.post(url, json={}, headers=other_plan.admin.auth)).status_code == 404
    r = await client.post(url, json={"scopes": ["plan:admin"]}, headers=plan.admin.auth)
    assert r.status_code == 401  # the admin's own token has expired under the 1-day period
    await plan.admin.renew(client)
    r = await client.post(url, json={"scopes": ["plan:admin"]}, headers=plan.admin.auth)
    assert r.status_code == 422 and r.json()["error"] == "invalid_scope"


async def test_metadata_lists_every_endpoint_and_capability(client) -> None:
    meta = (await client.get("/.well-known/oauth-authorization-server")).json()
    assert meta["issuer"] == "https://tessera.test"
    for key in ("authorization_endpoint", "token_endpoint", "introspection_endpoint",
                "revocation_endpoint"):
        assert meta[key].startswith("https://tessera.test/oauth2/")
    assert set(meta["grant_types_supported"]) == {"authorization_code", "refresh_token",
                                                  "client_credentials"}
    assert {"client_secret_basic", "client_secret_post"} <= set(
        meta["token_endpoint_auth_methods_supported"])
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert "tokens:read" in meta["scopes_supported"]
