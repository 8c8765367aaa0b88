"""Rule 11: no token outlives or outranks its origin. A walk over every scope of the catalogue
and every kind of token a derivation starts from:

- an OAuth access token (authorization code, a plan admin's grant), a machine token
  (client_credentials) and an integration token, each holding one scope: none of them creates a
  credential or lengthens a life, whatever the scope (a personal token, a user, an integration,
  an integration token, the plan's period, a reactivation), and nothing is created;
- a refresh token holding one scope: what it mints never carries a scope it lacks, and never
  lives past it;
- a personal token: the user acting as themself mints a personal token of the same user, with
  no more than that user's role.
"""

from __future__ import annotations

import uuid

import pytest

from app.oauth2.scopes import CATALOGUE
from tests.helpers import create_gateway_client, introspect, set_period
from tests.oauth2.conftest import REDIRECT, register_custom
from tests.oauth2.test_security import get_code, pkce, token

pytestmark = pytest.mark.asyncio

SCOPES = list(CATALOGUE)


def minting(plan, integration_id: str, deactivated_id: str) -> list[tuple[str, str, dict]]:  # noqa: ANN001
    """Every operation that creates a credential or lengthens a life, with a valid body."""
    base = f"/v1/plans/{plan.plan_id}"
    return [
        ("POST", "/v1/me/tokens", {"name": "derived"}),
        ("POST", f"{base}/users", {"email": f"x-{uuid.uuid4().hex[:8]}@example.com",
                                   "name": "X", "role": "admin",
                                   "password": "correct horse battery"}),
        ("POST", f"{base}/integrations", {"name": "derived", "scopes": SCOPES}),
        ("POST", f"{base}/integrations/{integration_id}/tokens", {}),
        ("PUT", f"{base}/token-expiration", {"value": 100, "unit": "years"}),
        ("DELETE", f"{base}/token-expiration", {}),
        ("POST", f"{base}/integrations/{deactivated_id}/reactivate", {}),
    ]


async def counts(client, plan) -> tuple:  # noqa: ANN001
    """What minting would change, as the plan's admin sees it."""
    auth = plan.admin.auth
    base = f"/v1/plans/{plan.plan_id}"
    tokens = (await client.get(f"{base}/tokens", params={"limit": 500}, headers=auth)).json()
    users = (await client.get(f"{base}/users", headers=auth)).json()
    installed = (await client.get(f"{base}/integrations", headers=auth)).json()
    policy = (await client.get(f"{base}/token-expiration", headers=auth)).json()
    return (len(tokens["items"]), len(users), [(i["name"], i["state"]) for i in installed],
            policy["period"])


async def code_grant(client, browser, plan, app, scope: str) -> dict:  # noqa: ANN001
    verifier, challenge = pkce()
    code = await get_code(browser, plan, app, challenge, scope=scope)
    r = await token(client, app, grant_type="authorization_code", code=code,
                    redirect_uri=REDIRECT, code_verifier=verifier)
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == scope
    return r.json()


@pytest.fixture
async def setting(client, plan):  # noqa: ANN001, ANN201
    """An integration of the plan allowed every scope, and one deactivated installation."""
    app = await register_custom(client, plan, scopes=SCOPES)
    parked = await register_custom(client, plan, name="Parked")
    r = await client.post(f"/v1/plans/{plan.plan_id}/integrations/{parked.id}/deactivate",
                          headers=plan.admin.auth)
    assert r.status_code == 200, r.text
    await set_period(client, plan, 30, "days")
    return app, parked


async def assert_mints_nothing(client, plan, setting, secret: str, what: str) -> None:  # noqa: ANN001
    app, parked = setting
    before = await counts(client, plan)
    for method, path, body in minting(plan, app.id, parked.id):
        r = await client.request(method, path, json=body or None,
                                 headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code in (401, 403), f"{what}: {method} {path} -> {r.status_code} {r.text}"
        if r.status_code == 403 and method != "DELETE":
            assert r.json()["error"] in ("personal_credentials_required", "insufficient_scope",
                                         "admin_required", "user_required"), (what, r.text)
    assert await counts(client, plan) == before, what


@pytest.mark.parametrize("scope", SCOPES)
async def test_no_derived_token_mints_or_lengthens_anything(client, browser, plan, setting,
                                                            scope) -> None:
    app, _parked = setting
    oauth = await code_grant(client, browser, plan, app, scope)
    machine = await token(client, app, grant_type="client_credentials", scope=scope)
    assert machine.status_code == 200, machine.text
    r = await client.post(f"/v1/plans/{plan.plan_id}/integrations/{app.id}/tokens",
                          json={"scopes": [scope]}, headers=plan.admin.auth)
    assert r.status_code == 201, r.text
    for kind, secret in (("oauth access", oauth["access_token"]),
                         ("machine", machine.json()["access_token"]),
                         ("integration", r.json()["token"])):
        await assert_mints_nothing(client, plan, setting, secret, f"{kind} token with {scope}")
    # With a derived token that administers the plan, the admin's own rights still stand: the
    # refusal is about the credential, not the operation.
    if scope == "plan:admin":
        r = await client.put(f"/v1/plans/{plan.plan_id}/token-expiration",
                             json={"value": 60, "unit": "days"}, headers=plan.admin.auth)
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("scope", SCOPES)
async def test_a_refresh_mints_no_more_scope_and_no_more_life(client, browser, plan, setting,
                                                              clock, scope) -> None:
    app, _parked = setting
    gateway = await create_gateway_client(client, plan)
    pair = await code_grant(client, browser, plan, app, scope)
    parent = await introspect(client, gateway, pair["refresh_token"])
    clock.advance(days=20)
    for other in SCOPES:
        if other != scope:
            r = await token(client, app, grant_type="refresh_token",
                            refresh_token=pair["refresh_token"], scope=f"{scope} {other}")
            assert r.status_code == 400 and r.json()["error"] == "invalid_scope", (other, r.text)
    r = await token(client, app, grant_type="refresh_token", refresh_token=pair["refresh_token"])
    assert r.status_code == 200, r.text
    child = r.json()
    assert child["scope"] == scope
    for minted in (child["access_token"], child["refresh_token"]):
        answer = await introspect(client, gateway, minted)
        assert answer["scope"] == scope
        assert answer["exp"] <= parent["exp"], "a refresh outlives its parent"
    assert child["expires_in"] <= parent["exp"] - int(clock.now().timestamp())


async def test_a_personal_token_mints_the_same_user_and_no_more(client, plan) -> None:
    member = await plan.add_user()
    r = await client.post("/v1/me/tokens", json={"name": "second"}, headers=member.auth)
    assert r.status_code == 201, r.text
    second = {"Authorization": f"Bearer {r.json()['token']}"}
    me = (await client.get("/v1/me", headers=second)).json()
    assert me["id"] == str(member.user_id) and me["role"] == "member"
    r = await client.put(f"/v1/plans/{plan.plan_id}/token-expiration",
                         json={"value": 1, "unit": "years"}, headers=second)
    assert r.status_code == 403 and r.json()["error"] == "admin_required"
