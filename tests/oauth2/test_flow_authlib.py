"""The whole flow, driven by a real OAuth client library (Authlib's AsyncOAuth2Client):
discovery, authorization code + PKCE, refresh with rotation, introspection, revocation."""

from __future__ import annotations

import httpx2
import pytest
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client

from tests.helpers import create_gateway_client, introspect
from tests.oauth2.conftest import REDIRECT, register_third_party

pytestmark = pytest.mark.asyncio


def oauth_client(app, registered, scope: str) -> AsyncOAuth2Client:  # noqa: ANN001
    return AsyncOAuth2Client(
        registered.client_id, registered.client_secret, scope=scope, redirect_uri=REDIRECT,
        code_challenge_method="S256", token_endpoint_auth_method="client_secret_basic",
        transport=httpx2.ASGITransport(app=app), base_url="https://tessera.test")


async def test_authorization_code_pkce_refresh_introspect_revoke(app, client, plan, custom,
                                                                 browser, clock) -> None:
    gateway = await create_gateway_client(client, plan)
    member = await plan.add_user()
    async with oauth_client(app, custom, "profile tokens:read") as oauth:
        meta = (await oauth.request("GET", "/.well-known/oauth-authorization-server",
                                    withhold_token=True)).json()
        assert meta["code_challenge_methods_supported"] == ["S256"]
        verifier = generate_token(64)
        url, state = oauth.create_authorization_url(meta["authorization_endpoint"],
                                                    code_verifier=verifier)
        back = await browser.authorize(url, member.email, member.password)
        assert back.headers["location"].startswith(REDIRECT + "?")
        token = await oauth.fetch_token(meta["token_endpoint"],
                                        authorization_response=back.headers["location"],
                                        code_verifier=verifier)
        assert token["token_type"] == "Bearer" and token["expires_in"] == 3600
        assert token["scope"] == "profile tokens:read"

        # The access token works on the API within its scopes, and only those.
        me = await oauth.get("/v1/me")
        assert me.status_code == 200 and me.json()["id"] == str(member.user_id)
        assert (await oauth.get("/v1/me/tokens")).status_code == 200
        # Rule 11: an OAuth token never mints a personal token, whatever its scopes.
        denied = await oauth.post("/v1/me/tokens", json={})
        assert denied.status_code == 403
        assert denied.json()["error"] == "personal_credentials_required"

        answer = await introspect(client, gateway, token["access_token"])
        assert answer["active"] and answer["client_id"] == custom.client_id
        assert answer["sub"] == str(member.user_id) and answer["token_kind"] == "access"

        # Refresh: a new pair, which keeps the grant's generation time (rule 11: the plan's
        # period bounds the grant); the old refresh token is spent.
        first = dict(token)
        clock.advance(minutes=30)
        refreshed = await oauth.refresh_token(meta["token_endpoint"])
        assert refreshed["refresh_token"] != first["refresh_token"]
        assert (await introspect(client, gateway, refreshed["access_token"]))["iat"] == \
            answer["iat"]
        assert await introspect(client, gateway, first["refresh_token"]) == {"active": False}

        # Reusing the spent refresh token revokes the whole family (RFC 9700 §4.14.2).
        with pytest.raises(OAuthError) as reuse:
            await oauth.refresh_token(meta["token_endpoint"],
                                      refresh_token=first["refresh_token"])
        assert reuse.value.error == "invalid_grant"
        for t in (refreshed["access_token"], refreshed["refresh_token"],
                  first["access_token"]):
            assert await introspect(client, gateway, t) == {"active": False}


async def test_revoking_a_refresh_token_revokes_its_access_tokens(app, client, plan, custom,
                                                                  browser) -> None:
    gateway = await create_gateway_client(client, plan)
    async with oauth_client(app, custom, "profile") as oauth:
        verifier = generate_token(64)
        url, _ = oauth.create_authorization_url("/oauth2/authorize", code_verifier=verifier)
        back = await browser.authorize(url, plan.admin.email, plan.admin.password)
        token = await oauth.fetch_token("/oauth2/token", code_verifier=verifier,
                                        authorization_response=back.headers["location"])
        r = await oauth.revoke_token("/oauth2/revoke", token=token["refresh_token"],
                                     token_type_hint="refresh_token")
        assert r.status_code == 200
        assert await introspect(client, gateway, token["access_token"]) == {"active": False}
        assert (await oauth.get("/v1/me")).status_code == 401


async def test_third_party_installed_by_admin_then_used_by_member(app, client, plan, operator,
                                                                  browser) -> None:
    tp = await register_third_party(client, operator)
    member = await plan.add_user()
    async with oauth_client(app, tp, "profile data:read") as oauth:
        # A member cannot install it: the consent screen offers only Deny.
        url, _ = oauth.create_authorization_url("/oauth2/authorize",
                                                code_verifier=generate_token(64))
        page = await browser.http.get(url)
        page = await browser.follow(await browser.submit(page, email=member.email,
                                                         password=member.password))
        assert "not installed in your plan" in page.text
        assert 'value="allow"' not in page.text
        back = await browser.submit(page, button=("decision", "deny"))
        assert "error=access_denied" in back.headers["location"]

        # The admin allows it, which installs it for the plan.
        admin_browser = type(browser)(app)
        verifier = generate_token(64)
        url, _ = oauth.create_authorization_url("/oauth2/authorize", code_verifier=verifier)
        back = await admin_browser.authorize(url, plan.admin.email, plan.admin.password)
        await admin_browser.close()
        assert "code=" in back.headers["location"]

        # Now the member may authorize it for themselves.
        verifier = generate_token(64)
        url, _ = oauth.create_authorization_url("/oauth2/authorize", code_verifier=verifier)
        back = await browser.authorize(url, member.email, member.password)
        token = await oauth.fetch_token("/oauth2/token", code_verifier=verifier,
                                        authorization_response=back.headers["location"])
        assert (await oauth.get("/v1/me")).json()["id"] == str(member.user_id)

    # client_credentials: the installed integration acts for the plan.
    async with oauth_client(app, tp, "data:read") as machine:
        token = await machine.fetch_token("/oauth2/token", grant_type="client_credentials")
        assert "refresh_token" not in token and token["scope"] == "data:read"


async def test_client_credentials_for_a_custom_integration(app, client, plan, custom) -> None:
    gateway = await create_gateway_client(client, plan)
    async with oauth_client(app, custom, "data:read") as machine:
        machine.token_endpoint_auth_method = "client_secret_post"
        token = await machine.fetch_token("/oauth2/token", grant_type="client_credentials")
    answer = await introspect(client, gateway, token["access_token"])
    assert answer["sub"] == custom.client_id and answer["scope"] == "data:read"
    assert answer["plan_id"] == str(plan.plan_id)
