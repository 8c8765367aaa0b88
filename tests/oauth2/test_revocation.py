"""RFC 7009 revocation at `/oauth2/revoke`: a client revokes its own tokens, a refresh token
takes its grant with it, the answer is 200 whatever the token, and concurrent revocations are
committed together (app/tokens/batches.py: TokenRevoker) before any of them is answered."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.db import make_sessionmaker
from app.tokens import cache
from app.tokens.cache import Keys
from tests.conftest import PG_HOST
from tests.helpers import create_gateway_client, introspect
from tests.integrations.test_token_client_cache import serve_cache
from tests.tokens.test_batches import statements

pytestmark = pytest.mark.asyncio

REVOKE = "/oauth2/revoke"


async def issued(client, creds) -> str:  # noqa: ANN001
    r = await client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                          auth=creds)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


async def audit_of(database, token_id: uuid.UUID,  # noqa: ANN001
                   action: str = "token.revoked") -> list[AuditEvent]:
    async with make_sessionmaker(database.engine)() as session:
        return list((await session.execute(
            select(AuditEvent).where(AuditEvent.target_id == str(token_id),
                                     AuditEvent.action == action))).scalars())


async def test_a_client_revokes_its_own_tokens_only(client, plan, database) -> None:
    own = await create_gateway_client(client, plan)
    other = await create_gateway_client(client, plan)
    mine, theirs = await issued(client, own), await issued(client, other)

    r = await client.post(REVOKE, data={"token": mine}, auth=own)
    assert r.status_code == 200 and r.json() == {}
    assert r.headers["cache-control"] == "no-store"
    assert await introspect(client, own, mine) == {"active": False}
    # §2.1: another client's token is refused, the client is told, and the token is left
    # alone; so is a personal token, issued to no client.
    for foreign in (theirs, plan.admin.token):
        r = await client.post(REVOKE, data={"token": foreign}, auth=own)
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
        assert "not issued to this client" in r.json()["error_description"]
    assert (await introspect(client, other, theirs))["active"] is True
    assert (await introspect(client, other, plan.admin.token))["active"] is True

    listed = (await client.get(f"/v1/plans/{plan.plan_id}/tokens",
                               params={"kind": "access"}, headers=plan.admin.auth)).json()
    [row] = [t for t in listed["items"] if t["hint"] == mine[-4:]]
    [event] = await audit_of(database, uuid.UUID(row["id"]))
    assert (event.action, event.plan_id, event.detail) == \
        ("token.revoked", plan.plan_id, {"reason": "revoked by the client", "kind": "access"})
    [issuance] = await audit_of(database, uuid.UUID(row["id"]), "token.issued")
    assert issuance.detail["grant"] == "client_credentials"
    assert event.actor.startswith("integration:")


@pytest.mark.parametrize("token", ["tsa_" + "A" * 49, "nonsense", "x" * 5000])
async def test_unknown_and_malformed_tokens_answer_200(client, plan, token) -> None:
    creds = await create_gateway_client(client, plan)
    r = await client.post(REVOKE, data={"token": token}, auth=creds)
    assert r.status_code == 200 and r.json() == {}


async def test_bad_requests_are_refused(client, plan) -> None:
    creds = await create_gateway_client(client, plan)
    r = await client.post(REVOKE, data={}, auth=creds)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await client.post(REVOKE, data={"token": "x"}, auth=(creds[0], "tss_wrong"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = await client.post(REVOKE, data={"token": "x"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


async def test_concurrent_revocations_share_one_statement_and_are_all_committed(
        app, client, plan, database) -> None:
    serve_cache(app)
    creds = await create_gateway_client(client, plan)
    tokens = [await issued(client, creds) for _ in range(12)]
    for t in tokens:  # cached on this process: revocation must evict them
        assert (await introspect(client, creds, t))["active"] is True
    with statements(database.engine) as seen:
        answers = await asyncio.gather(*(client.post(REVOKE, data={"token": t}, auth=creds)
                                         for t in tokens + tokens[:3]))  # three twice
    assert all(r.status_code == 200 for r in answers)
    if database.backend == "postgresql":  # one statement per batch (SQLite: one per token)
        assert 1 <= sum("UPDATE TOKENS" in s for s in seen) <= 2, seen
    for t in tokens:
        assert await introspect(client, creds, t) == {"active": False}


async def test_other_replicas_hear_of_a_revocation(client, plan, database) -> None:
    creds = await create_gateway_client(client, plan)
    token = await issued(client, creds)
    if database.backend != "postgresql":  # no NOTIFY (and no cache) on SQLite
        assert (await client.post(REVOKE, data={"token": token}, auth=creds)).status_code == 200
        assert await introspect(client, creds, token) == {"active": False}
        return
    heard: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_notify(_conn, _pid, _channel, payload: str) -> None:  # noqa: ANN001
        if not heard.done() and "t" in Keys.from_payload(payload).payload():
            heard.set_result(payload)

    remote = await asyncpg.connect(PG_HOST.rsplit("/", 1)[0] + "/"
                                   + database.url.rsplit("/", 1)[1])
    try:
        await remote.add_listener(cache.CHANNEL, on_notify)
        assert (await client.post(REVOKE, data={"token": token}, auth=creds)).status_code == 200
        keys = Keys.from_payload(await asyncio.wait_for(heard, 5))
    finally:
        await remote.close()
    listed = (await client.get(f"/v1/plans/{plan.plan_id}/tokens",
                               params={"kind": "access"}, headers=plan.admin.auth)).json()
    [row] = [t for t in listed["items"] if t["hint"] == token[-4:]]
    assert keys.token_ids == {uuid.UUID(row["id"])}
