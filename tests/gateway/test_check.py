"""`/v1/gateway/check`: the forward-auth contract, in process, on both backends."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import update

from app import credentials
from app.credentials import SecretKind
from app.db import make_sessionmaker, session_scope
from app.integrations.models import Installation, Integration
from app.tokens import cache
from tests.helpers import set_period

pytestmark = pytest.mark.asyncio

CHECK = "/v1/gateway/check"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def custom_integration_token(client, plan, scopes=("data:read",)) -> tuple[str, str, str]:
    """A custom integration of the plan and an admin-generated token for it."""
    r = await client.post(f"/v1/plans/{plan.plan_id}/integrations",
                          json={"name": f"in-house-{uuid.uuid4().hex[:6]}",
                                "scopes": ["data:read", "data:write", "profile"]},
                          headers=plan.admin.auth)
    assert r.status_code == 201, r.text
    integ = r.json()
    r = await client.post(f"/v1/plans/{plan.plan_id}/integrations/{integ['id']}/tokens",
                          json={"scopes": list(scopes)}, headers=plan.admin.auth)
    assert r.status_code == 201, r.text
    return integ["id"], integ["client_id"], r.json()["token"]


async def test_a_personal_token_passes_with_identity_headers(client, plan, clock) -> None:
    user = await plan.add_user()
    r = await client.get(CHECK, headers=bearer(user.token))
    assert r.status_code == 200, r.text
    assert r.headers["x-tessera-subject"] == str(user.user_id)
    assert r.headers["x-tessera-plan"] == str(plan.plan_id)
    assert r.headers["x-tessera-scopes"] == "*"  # a personal token carries every scope
    assert r.headers["x-tessera-token-kind"] == "personal"
    assert "x-tessera-client" not in r.headers
    assert "x-tessera-expires-at" not in r.headers  # no period: never expires
    assert r.headers["cache-control"] == "no-store"
    assert r.json()["active"] is True

    await set_period(client, plan, 2, "hours")
    r = await client.get(CHECK, headers=bearer(user.token))
    assert r.headers["x-tessera-expires-at"] == "2026-01-15T14:00:00+00:00"
    # Every scope a gateway may ask for is held by a personal token.
    r = await client.get(CHECK, params={"scope": "data:write"}, headers=bearer(user.token))
    assert r.status_code == 200


async def test_missing_and_malformed_credentials_are_401(client, plan) -> None:
    r = await client.get(CHECK)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="tessera"'  # RFC 6750 §3.1
    assert r.json() == {"error": "missing_token", "message": "a bearer token is required"}

    refresh_like = credentials.generate(SecretKind.refresh)
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer nonsense", f"Bearer {refresh_like}",
                   "Bearer " + "x" * 5000, f"Token {plan.admin.token}"):
        r = await client.get(CHECK, headers={"Authorization": header})
        assert r.status_code == 401, header
        assert r.headers["www-authenticate"].startswith('Bearer realm="tessera", '
                                                        'error="invalid_token"')
        assert r.json()["error"] == "invalid_token"


async def test_unknown_revoked_and_expired_tokens_are_401(client, plan, clock) -> None:
    unknown = credentials.generate(SecretKind.personal)
    r = await client.get(CHECK, headers=bearer(unknown))
    assert r.status_code == 401 and r.json()["message"] == "unknown token"

    user = await plan.add_user()
    listed = (await client.get("/v1/me/tokens", headers=user.auth)).json()["items"]
    assert (await client.delete(f"/v1/me/tokens/{listed[0]['id']}",
                                headers=user.auth)).status_code == 204
    r = await client.get(CHECK, headers=bearer(user.token))
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert r.json() == {"error": "invalid_token", "message": "the token is revoked"}

    other = await plan.add_user()
    assert (await client.get(CHECK, headers=other.auth)).status_code == 200
    await set_period(client, plan, 1, "minutes")
    clock.advance(minutes=1)  # policy expiry, counted from the original generation time
    r = await client.get(CHECK, headers=other.auth)
    assert r.status_code == 401 and r.json()["message"] == "the token is expired"


async def test_required_scopes_from_query_and_header(client, plan) -> None:
    _id, client_id, token = await custom_integration_token(client, plan, scopes=("data:read",))
    r = await client.get(CHECK, params={"scope": "data:read"}, headers=bearer(token))
    assert r.status_code == 200, r.text
    assert r.headers["x-tessera-client"] == client_id
    assert r.headers["x-tessera-subject"] == client_id
    assert r.headers["x-tessera-scopes"] == "data:read"
    assert r.headers["x-tessera-token-kind"] == "integration"

    r = await client.get(CHECK, params={"scope": "data:write"}, headers=bearer(token))
    assert r.status_code == 403
    assert r.headers["www-authenticate"] == (
        'Bearer realm="tessera", error="insufficient_scope", '
        'error_description="the token lacks a required scope", scope="data:write"')
    assert r.json() == {"error": "insufficient_scope",
                        "message": "the token lacks a required scope",
                        "required_scope": "data:write"}
    # The header and the query are both required; so is every scope listed in either.
    r = await client.get(CHECK, params={"scope": "data:read"},
                         headers={**bearer(token), "X-Required-Scope": "data:write"})
    assert r.status_code == 403 and r.json()["required_scope"] == "data:read data:write"
    r = await client.get(CHECK, headers={**bearer(token), "X-Required-Scope": "data:read"})
    assert r.status_code == 200
    # A required scope that is no scope token is the gateway's misconfiguration.
    r = await client.get(CHECK, params={"scope": 'x"y'}, headers=bearer(token))
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


async def test_envoy_style_prefixed_paths_and_any_method(client, plan) -> None:
    _id, _cid, token = await custom_integration_token(client, plan, scopes=("data:read",))
    # The original request's query is not Tessera's: `?scope=` there is ignored...
    r = await client.get(f"{CHECK}/api/items?scope=data:write", headers=bearer(token))
    assert r.status_code == 200, r.text
    # ...and the required scope travels in a header set by the gateway.
    r = await client.post(f"{CHECK}/api/items", headers={**bearer(token),
                                                          "X-Required-Scope": "data:write"})
    assert r.status_code == 403
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"):
        r = await client.request(method, CHECK, headers=bearer(token))
        assert r.status_code == 200, method
        assert r.headers["x-tessera-plan"] == str(plan.plan_id)


async def test_a_refused_integration_is_403_with_its_rule(client, plan, database, clock) -> None:
    integ_id, _cid, token = await custom_integration_token(client, plan)
    maker = make_sessionmaker(database.engine)
    async with session_scope(maker) as session:
        await session.execute(update(Installation)
                              .where(Installation.integration_id == uuid.UUID(integ_id))
                              .values(state="deactivated"))
        await cache.changed(session, integration_id=uuid.UUID(integ_id))
    r = await client.get(CHECK, headers=bearer(token))
    assert r.status_code == 403
    assert r.json()["error"] == "integration_refused"
    assert r.json()["rule"] == "installation_deactivated"
    assert r.headers["x-tessera-refusal-rule"] == "installation_deactivated"
    assert 'error="integration_refused"' in r.headers["www-authenticate"]

    async with session_scope(maker) as session:
        await session.execute(update(Integration).where(Integration.id == uuid.UUID(integ_id))
                              .values(review_status="revoked"))
        await cache.changed(session, integration_id=uuid.UUID(integ_id))
    r = await client.get(CHECK, headers=bearer(token))
    assert r.status_code == 403 and r.json()["rule"] == "review_revoked"
    assert r.json()["message"] == "refused: the integration's platform review was revoked"
