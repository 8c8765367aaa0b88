"""Personal API tokens: created once-shown, listed with expiry, revoked; digests only."""

from __future__ import annotations

import asyncio
import uuid

import httpx2
import pytest
from sqlalchemy import select

from app import credentials
from app.config import Settings
from app.db import make_sessionmaker
from app.main import create_app
from app.tokens.models import Token
from tests.conftest import make_plan, migrated_pg_database
from tests.helpers import create_gateway_client, introspect, set_period
from tests.tokens.test_batches import inserts, statements

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


async def test_concurrent_creations_share_one_insert_and_answer_as_stored(client, plan, clock,
                                                                        database) -> None:
    """Creations of concurrent requests are committed together (group commit), each answered
    with its own token as later reads show it, the plan's period counted in."""
    await set_period(client, plan, 30, "days")
    member = await plan.add_user()
    with statements(database.engine) as seen:
        answers = await asyncio.gather(*(
            client.post("/v1/me/tokens", json={"name": f"t{i}"}, headers=member.auth)
            for i in range(8)))
    assert [r.status_code for r in answers] == [201] * 8, [r.text for r in answers]
    assert inserts(seen) < 8, seen
    issued = {r.json()["id"]: r.json() for r in answers}
    assert len(issued) == 8 and {t["name"] for t in issued.values()} == {f"t{i}" for i in range(8)}
    listed = {t["id"]: t for t in (await client.get(
        "/v1/me/tokens", params={"limit": 500}, headers=member.auth)).json()["items"]}
    for token_id, answer in issued.items():
        assert {k: v for k, v in answer.items() if k != "token"} == listed[token_id]
        assert answer["expires_at"].startswith("2026-02-14T12:00")  # T0 + 30 days
        r = await client.get("/v1/me", headers={"Authorization": f"Bearer {answer['token']}"})
        assert r.status_code == 200, r.text


async def test_concurrent_creations_do_not_starve_the_pool(clock) -> None:
    """A creation waiting on its batched write holds no pool connection: 20 of them on a pool
    of one connection all complete (PostgreSQL; SQLite's pool does not queue this way)."""
    async with migrated_pg_database(pool_size=1) as db:
        settings = Settings(database_url=db.url, issuer="https://tessera.test",
                            secret_key="test-secret-key-for-signing-cookies", db_pool_size=1)
        app = create_app(settings, clock=clock, engine=db.engine)
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="https://tessera.test") as c:
            plan = await make_plan(db, clock)
            member = await plan.add_user()
            answers = await asyncio.wait_for(asyncio.gather(*(
                c.post("/v1/me/tokens", json={"name": "n"}, headers=member.auth)
                for _ in range(20))), timeout=20)  # a deadlock guard, not a speed test
    assert [r.status_code for r in answers] == [201] * 20, [r.text for r in answers]


@pytest.mark.parametrize("name", ["a\x00b", "tab\there", "line\nbreak", "del\x7f"])
async def test_a_name_with_control_characters_is_refused(client, plan, database,
                                                         name: str) -> None:
    member = await plan.add_user()
    r = await client.post("/v1/me/tokens", json={"name": name}, headers=member.auth)
    assert r.status_code == 422 and r.json()["error"] == "invalid_request", r.text
    async with make_sessionmaker(database.engine)() as s:
        count = len((await s.execute(select(Token.id).where(
            Token.user_id == member.user_id))).all())
    assert count == 1  # only the token the member had


async def test_no_connection_is_held_while_a_password_is_checked(client, plan, database,
                                                                 monkeypatch) -> None:
    """The password check (argon2id, in a thread) runs with the request's connection back in
    the pool: wrong passwords cannot hold the pool's connections."""
    from app import credentials as real

    held: list[int] = []
    verify = real.verify_password

    def watched(password_hash: str | None, password: str) -> bool:
        held.append(database.engine.pool.checkedout())
        return verify(password_hash, password)

    monkeypatch.setattr(real, "verify_password", watched)
    user = await plan.add_user(token=False)
    r = await client.post("/v1/me/tokens", auth=(user.email, "wrong password"))
    assert r.status_code == 401
    r = await client.post("/v1/me/tokens", json={"name": "ok"}, auth=(user.email, user.password))
    assert r.status_code == 201, r.text
    assert held == [0, 0]


async def test_a_session_that_wrote_is_never_closed_for_a_password_check(plan, database) -> None:
    """`users.authenticate` gives the session's connection back; a session that wrote (here a
    Core UPDATE, which leaves no pending object) would lose its write, so it refuses instead."""
    from sqlalchemy import update

    from app.db import session_scope
    from app.users import service as users
    from app.users.models import User

    user = await plan.add_user(token=False)
    with pytest.raises(RuntimeError, match="only read"):
        async with session_scope(make_sessionmaker(database.engine)) as session:
            await session.execute(update(User).where(User.id == user.user_id)
                                  .values(name="Renamed"))
            await users.authenticate(session, user.email, user.password)
    async with session_scope(make_sessionmaker(database.engine)) as session:
        assert await users.authenticate(session, user.email, user.password) is not None


async def test_pages_of_tokens_issued_in_one_instant_list_each_once_in_order(client, plan,
                                                                            database) -> None:
    """The clock stands still: every token shares `issued_at`, so the id alone orders them. A
    walk page by page, in the plan's listing and the user's, gives each token exactly once,
    newest first (issued_at, then id, both descending)."""
    for n in range(7):
        r = await client.post("/v1/me/tokens", json={"name": f"t{n}"}, headers=plan.admin.auth)
        assert r.status_code == 201, r.text
    for path in ("/v1/me/tokens", f"/v1/plans/{plan.plan_id}/tokens"):
        seen: list[dict] = []
        for offset in range(0, 12, 3):
            r = await client.get(f"{path}?limit=3&offset={offset}", headers=plan.admin.auth)
            assert r.status_code == 200, r.text
            seen += r.json()["items"]
        ids = [t["id"] for t in seen]
        assert len(ids) == len(set(ids)) >= 8  # the fixture's own token and the seven
        keys = [(t["created_at"], uuid.UUID(t["id"])) for t in seen]
        assert keys == sorted(keys, reverse=True)


async def test_a_page_of_a_crowded_plan_is_read_from_its_index_without_a_sort(plan,
                                                                            database) -> None:
    """Both backends walk the (plan, issued_at, id) and (user, kind, issued_at, id) indexes
    backward and stop after the page: no sort, however many tokens share an instant (with the
    older (plan_id, issued_at) index PostgreSQL read every token of the newest instant to sort
    them: 29 ms a page at 50,000), and a user's personal tokens are not found by walking past
    the user's newer OAuth tokens."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert, text

    from app.tokens.repository import _listing

    instant = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [{"id": uuid.uuid4(), "kind": "personal" if n % 2 else "refresh",
             "digest": uuid.uuid4().hex + f"{n:08}", "hint": "crwd", "plan_id": plan.plan_id,
             "user_id": plan.admin.user_id, "scopes": "",
             "issued_at": instant + timedelta(seconds=(n + 1) % 2)} for n in range(3000)]
    async with database.engine.begin() as conn:
        await conn.execute(insert(Token), rows)
        await conn.execute(text("ANALYZE tokens" if database.backend == "postgresql"
                                else "ANALYZE"))
    try:
        async with database.engine.connect() as conn:
            for filters, params in (({"plan_id"}, {"plan_id": plan.plan_id}),
                                    ({"user_id", "kind"}, {"user_id": plan.admin.user_id,
                                                           "kind": "personal"})):
                compiled = _listing(frozenset(filters)).compile(dialect=conn.dialect)
                values = {**params, "limit": 100, "offset": 0}
                bound = compiled.construct_params(values)
                args = tuple(bound[name] for name in compiled.positiontup)
                processors = compiled._bind_processors  # noqa: SLF001 - UUIDs as the driver takes them
                args = tuple(processors[name](v) if name in processors else v
                             for name, v in zip(compiled.positiontup, args, strict=True))
                if database.backend == "postgresql":
                    result = await conn.exec_driver_sql("EXPLAIN ANALYZE " + str(compiled), args)
                    shown = "\n".join(r[0] for r in result)
                    assert "Sort" not in shown, shown
                    assert "Index Scan Backward" in shown, shown
                    assert "Rows Removed by Filter" not in shown, shown
                else:
                    result = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled),
                                                        args)
                    shown = "\n".join(str(r[-1]) for r in result)
                    assert "TEMP B-TREE" not in shown, shown
                    assert "_issued_at_id" in shown, shown
                    assert "kind=?" in shown or "user_id" not in filters, shown
    finally:
        async with database.engine.begin() as conn:
            await conn.execute(text("DELETE FROM tokens WHERE hint = 'crwd'"))
            await conn.execute(text("ANALYZE tokens" if database.backend == "postgresql"
                                    else "ANALYZE"))


async def test_a_new_token_s_expiry_is_the_plan_s_period_in_force(app, client, plan) -> None:
    """Created with a personal token, the answer's expiry comes from the facts that token was
    just checked by (the cache's): right after a period is set, and after it changes again."""
    from datetime import timedelta

    from tests.helpers import set_period
    from tests.integrations.test_token_client_cache import serve_cache

    serve_cache(app)
    member = await plan.add_user()

    async def created_expiry() -> str | None:
        r = await client.post("/v1/me/tokens", json={"name": "n"}, headers=member.auth)
        assert r.status_code == 201, r.text
        listed = await client.get(f"/v1/me/tokens/{r.json()['id']}/status", headers=member.auth)
        assert listed.json()["expires_at"] == r.json()["expires_at"]  # what a check says
        return r.json()["expires_at"]

    assert await created_expiry() is None
    for value, unit, delta in ((3, "days", timedelta(days=3)), (2, "hours", timedelta(hours=2))):
        r = await set_period(client, plan, value, unit)
        assert r.status_code == 200, r.text
        r = await client.get("/v1/me", headers=member.auth)  # the member's token cached anew
        assert r.status_code == 200
        expected = (plan.clock.now() + delta).isoformat().replace("+00:00", "Z")
        assert await created_expiry() == expected
