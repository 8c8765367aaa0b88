"""Personal API tokens: created once-shown, listed with expiry, revoked; digests only."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from app import credentials
from app.db import make_sessionmaker
from app.tokens.models import Token
from tests.helpers import create_gateway_client, introspect, set_period

pytestmark = pytest.mark.asyncio


async def test_first_token_with_password_then_list_and_revoke(client, plan, clock,
                                                              database) -> None:
    user = await plan.add_user(token=False)
    r = await client.post("/v1/me/tokens", json={"name": "ci"}, auth=(user.email, user.password))
    assert r.status_code == 201, r.text
    issued = r.json()
    secret = issued["token"]
    assert secret.startswith("tsp_") and credentials.kind_of(secret) is not None
    assert issued["hint"] == secret[-4:]
    assert issued["expires_at"] is None and issued["status"] == "active"

    # Only the digest is stored.
    async with make_sessionmaker(database.engine)() as s:
        query = select(Token).where(Token.id == uuid.UUID(issued["id"]))
        row = (await s.execute(query)).scalar_one()
    assert row.digest == credentials.digest(secret)
    assert secret not in (row.digest, row.hint, row.name)

    auth = {"Authorization": f"Bearer {secret}"}
    await set_period(client, plan, 30, "days")
    r = await client.get("/v1/me/tokens", headers=auth)
    assert r.status_code == 200
    [listed] = r.json()["items"]
    assert "token" not in listed  # the secret is never shown again
    assert listed["hint"] == issued["hint"]
    assert listed["created_at"] == issued["created_at"]
    assert listed["expires_at"].startswith("2026-02-14T12:00")  # T0 + 30 days

    r = await client.delete(f"/v1/me/tokens/{issued['id']}", headers=auth)
    assert r.status_code == 204
    assert (await client.get("/v1/me/tokens", headers=auth)).status_code == 401


async def test_wrong_password_and_missing_credentials(client, plan) -> None:
    user = await plan.add_user(token=False)
    r = await client.post("/v1/me/tokens", auth=(user.email, "wrong password"))
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    r = await client.post("/v1/me/tokens", auth=("nobody@example.com", "whatever1"))
    assert r.status_code == 401
    r = await client.get("/v1/me/tokens")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")


async def test_bad_checksum_is_rejected_without_a_lookup(client, plan) -> None:
    token = plan.admin.token
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    r = await client.get("/v1/me/tokens", headers={"Authorization": f"Bearer {flipped}"})
    assert r.status_code == 401
    assert "checksum" in r.json()["message"]
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


async def test_users_see_and_revoke_only_their_own_tokens(client, plan, other_plan) -> None:
    alice, bob = await plan.add_user(), await plan.add_user()
    bob_tokens = (await client.get("/v1/me/tokens", headers=bob.auth)).json()["items"]
    r = await client.delete(f"/v1/me/tokens/{bob_tokens[0]['id']}", headers=alice.auth)
    assert r.status_code == 404
    r = await client.delete(f"/v1/plans/{plan.plan_id}/tokens/{bob_tokens[0]['id']}",
                            headers=other_plan.admin.auth)
    assert r.status_code == 404
    assert (await client.get("/v1/me/tokens", headers=bob.auth)).status_code == 200
    alice_list = (await client.get("/v1/me/tokens", headers=alice.auth)).json()["items"]
    assert {t["id"] for t in alice_list}.isdisjoint({t["id"] for t in bob_tokens})


async def test_admin_lists_and_revokes_plan_tokens(client, plan) -> None:
    member = await plan.add_user()
    creds = await create_gateway_client(client, plan)
    r = await client.get(f"/v1/plans/{plan.plan_id}/tokens", headers=plan.admin.auth)
    assert r.status_code == 200
    users = {t["user_id"] for t in r.json()["items"]}
    assert {str(member.user_id), str(plan.admin.user_id)} <= users
    target = next(t for t in r.json()["items"] if t["user_id"] == str(member.user_id))
    r = await client.delete(f"/v1/plans/{plan.plan_id}/tokens/{target['id']}",
                            headers=plan.admin.auth)
    assert r.status_code == 204
    assert await introspect(client, creds, member.token) == {"active": False}
    r = await client.get(f"/v1/plans/{plan.plan_id}/tokens?user_id={member.user_id}",
                         headers=plan.admin.auth)
    [revoked] = r.json()["items"]
    assert revoked["status"] == "revoked" and revoked["revoked_reason"]
    other_member = await plan.add_user()
    r = await client.get(f"/v1/plans/{plan.plan_id}/tokens", headers=other_member.auth)
    assert r.status_code == 403


async def test_admin_creates_users(client, plan, other_plan) -> None:
    body = {"email": "New.Person@Example.com", "name": "New", "role": "member",
            "password": "long enough password"}
    r = await client.post(f"/v1/plans/{plan.plan_id}/users", json=body, headers=plan.admin.auth)
    assert r.status_code == 201, r.text
    assert r.json()["email"] == "new.person@example.com"
    assert "password" not in r.text
    r = await client.post(f"/v1/plans/{plan.plan_id}/users", json=body, headers=plan.admin.auth)
    assert r.status_code == 409 and r.json()["error"] == "email_taken"
    r = await client.post(f"/v1/plans/{plan.plan_id}/users",
                          json={**body, "email": "x@example.com"},
                          headers=other_plan.admin.auth)
    assert r.status_code == 404
    r = await client.post("/v1/me/tokens", auth=("new.person@example.com",
                                                  "long enough password"))
    assert r.status_code == 201
