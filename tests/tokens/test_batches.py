"""Group commit and batched lookups of the token endpoint (app/tokens/batches.py), the sessions
that skip their commit (app/db.session_scope), the compiled-cache keys of the token statements,
and the token endpoint's cached installation and period facts (TokenCache placements).

Batches form from the calls queued while a flush is in flight, so the concurrent calls here are
gathered in one event-loop tick: they all land in one batch.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, func, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app import credentials
from app.db import make_engine, make_sessionmaker, session_scope
from app.tokens import cache, repository
from app.tokens import service as tokens
from app.tokens.batches import Batches
from app.tokens.cache import Keys
from app.tokens.models import Token
from app.tokens.rules import TokenKind
from tests.conftest import PG_HOST, Database, PlanFixture
from tests.gateway.test_cache import serving, stored
from tests.integrations.test_review_api import install
from tests.integrations.test_token_client_cache import serve_cache
from tests.oauth2.conftest import Registered, register_custom, register_third_party

# --- helpers ----------------------------------------------------------------------------------

@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every statement sent to the database meanwhile (an executemany counts once)."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, _params, _context, _many) -> None:  # noqa: ANN001
        seen.append(" ".join(statement.split()).upper())

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def inserts(seen: list[str]) -> int:
    # On PostgreSQL a batch of new rows is one statement with their audit events.
    return sum(s.startswith(("INSERT INTO TOKENS", "WITH INSERTED AS ( INSERT INTO TOKENS"))
               for s in seen)


def selects(seen: list[str]) -> int:
    return sum(s.startswith("SELECT") and "FROM TOKENS" in s for s in seen)


def rows_of(plan: PlanFixture, count: int = 1,
            kind: TokenKind = TokenKind.access) -> list[dict[str, Any]]:
    return [tokens.new_row(kind=kind, plan_id=plan.plan_id, now=plan.clock.now())[0]
            for _ in range(count)]


async def stored_ids(engine: AsyncEngine, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these token ids are committed (read on a connection of its own)."""
    async with engine.connect() as conn:
        return set((await conn.execute(select(Token.id).where(Token.id.in_(ids)))).scalars())


async def refresh_token(engine: AsyncEngine, plan: PlanFixture) -> dict[str, Any]:
    """A committed, unused refresh token row."""
    [row] = rows_of(plan, kind=TokenKind.refresh)
    async with engine.begin() as conn:
        await tokens.insert_rows(conn, [row])
    return row


async def used_at(engine: AsyncEngine, token_id: uuid.UUID):  # noqa: ANN201
    async with engine.connect() as conn:
        return (await conn.execute(select(Token.used_at).where(Token.id == token_id))).scalar_one()


def ids(rows: list[dict[str, Any]]) -> list[uuid.UUID]:
    return [row["id"] for row in rows]


# --- TokenWriter: group commit ----------------------------------------------------------------

async def test_concurrent_writes_commit_every_row_in_fewer_inserts(database, plan) -> None:
    """50 concurrent writes: every row is committed, in fewer INSERT statements than writes."""
    writer = Batches.for_engine(database.engine).writer
    writes = [rows_of(plan, 2) for _ in range(50)]
    with statements(database.engine) as seen:
        results = await asyncio.gather(*(writer.write(rows) for rows in writes))
    assert results == [True] * 50
    everything = [token_id for rows in writes for token_id in ids(rows)]
    assert await stored_ids(database.engine, everything) == set(everything)
    assert 1 <= inserts(seen) < 50


async def test_a_batch_of_rotations_marks_each_token_used_at_its_own_time(database, plan,
                                                                         clock) -> None:
    """Rotations of different tokens in one batch all win, each stamped with its own `at`."""
    writer = Batches.for_engine(database.engine).writer
    old = [await refresh_token(database.engine, plan) for _ in range(5)]
    times = [clock.now() + timedelta(seconds=i + 1) for i in range(5)]
    writes = [rows_of(plan, 2) for _ in old]
    results = await asyncio.gather(*(
        writer.write(rows, rotate=token["id"], at=at)
        for rows, token, at in zip(writes, old, times, strict=True)))
    assert results == [True] * 5
    assert [await used_at(database.engine, t["id"]) for t in old] == times
    everything = [token_id for rows in writes for token_id in ids(rows)]
    assert await stored_ids(database.engine, everything) == set(everything)


async def test_concurrent_rotations_of_one_refresh_token_only_one_wins(database, plan,
                                                                      clock) -> None:
    """Two exchanges of one refresh token: the first wins, the other writes nothing; a later
    exchange of the now used token loses too."""
    writer = Batches.for_engine(database.engine).writer
    old = await refresh_token(database.engine, plan)
    first, second = rows_of(plan, 2), rows_of(plan, 2)
    at = clock.now() + timedelta(minutes=1)
    results = await asyncio.gather(writer.write(first, rotate=old["id"], at=at),
                                   writer.write(second, rotate=old["id"], at=at))
    assert results == [True, False]  # the first exchange queued wins
    assert await stored_ids(database.engine, ids(first + second)) == set(ids(first))
    assert await used_at(database.engine, old["id"]) == at

    late = rows_of(plan, 2)
    assert await writer.write(late, rotate=old["id"], at=at + timedelta(minutes=1)) is False
    assert await stored_ids(database.engine, ids(late)) == set()
    assert await used_at(database.engine, old["id"]) == at  # its first use is kept


async def test_a_mixed_batch_is_one_statement_on_postgresql(database, plan, clock) -> None:
    """Rotations, a lost rotation and plain inserts in one batch: the winners' rows and the
    plain rows are stored, the loser's are not. On PostgreSQL the whole batch is one statement
    (one round trip, atomic on its own); elsewhere an UPDATE and an INSERT in one transaction."""
    writer = Batches.for_engine(database.engine).writer
    old = [await refresh_token(database.engine, plan) for _ in range(3)]
    at = clock.now() + timedelta(minutes=1)
    winners = [rows_of(plan, 2) for _ in old]
    loser, plain = rows_of(plan, 2), rows_of(plan, 1)
    with statements(database.engine) as seen:
        results = await asyncio.gather(
            *(writer.write(rows, rotate=token["id"], at=at)
              for rows, token in zip(winners, old, strict=True)),
            writer.write(loser, rotate=old[0]["id"], at=at),
            writer.write(plain))
    assert results == [True, True, True, False, True]
    stored = [token_id for rows in winners for token_id in ids(rows)] + ids(plain)
    assert await stored_ids(database.engine, stored + ids(loser)) == set(stored)
    assert [await used_at(database.engine, t["id"]) for t in old] == [at] * 3
    touching = [s for s in seen if "TOKENS" in s]
    if database.backend == "postgresql":
        assert len(touching) == 1 and touching[0].startswith("WITH ROTATING AS"), touching
    else:
        assert [s.split()[0] for s in touching] == ["UPDATE", "INSERT"], touching


@pytest.mark.parametrize("rotating", [False, True], ids=["inserts", "with-rotation"])
async def test_a_write_that_breaks_a_constraint_fails_alone(database, plan, clock,
                                                            rotating: bool) -> None:
    """One write of a batch breaks a constraint (its plan does not exist), which fails the
    batch's statement: the batch runs again in halves, halved while they fail so, so that
    write's request gets the error and writes nothing, and the others (and the rotation) are
    committed. Inserts alone
    run on an autocommit connection on PostgreSQL, so both paths are pinned."""
    writer = Batches.for_engine(database.engine).writer
    old = await refresh_token(database.engine, plan) if rotating else None
    good, other = rows_of(plan, 2), rows_of(plan, 1)
    [bad] = rows_of(plan)
    bad["plan_id"] = uuid.uuid4()  # references no plan: a foreign-key violation
    at = clock.now() + timedelta(minutes=1)
    with statements(database.engine) as seen:
        results = await asyncio.gather(
            writer.write(good, rotate=old["id"] if old else None, at=at),
            writer.write([bad]),
            writer.write(other),
            return_exceptions=True)
    assert results[0] is True and results[2] is True, results
    assert isinstance(results[1], IntegrityError), results
    assert await stored_ids(database.engine, ids(good + [bad] + other)) == set(ids(good + other))
    if old is not None:
        assert await used_at(database.engine, old["id"]) == at
    # The whole batch [good, bad, other]; its halves [good] and [bad, other]; the latter's
    # halves [bad] and [other].
    writes = [s for s in seen if s.startswith(("INSERT INTO TOKENS", "WITH ROTATING AS",
                                               "WITH INSERTED AS"))]
    assert len(writes) == 5, writes


async def test_a_failed_batch_fails_every_waiter_and_writes_nothing(plan, clock) -> None:
    """A failure that is not one write's own (here the database is gone: the engine points at
    a port where nothing listens) fails every waiter of the batch at once, each with the error,
    and nothing is tried write by write."""
    unreachable = make_engine("postgresql+asyncpg://postgres@127.0.0.1:9/none")
    try:
        writer = Batches.for_engine(unreachable).writer
        results = await asyncio.gather(*(writer.write(rows_of(plan)) for _ in range(3)),
                                       return_exceptions=True)
    finally:
        await unreachable.dispose()
    assert all(isinstance(r, OSError | DBAPIError) for r in results), results
    assert len({id(r) for r in results}) == 1  # one failure, told to each waiter


async def test_a_rotation_evicts_the_token_here_and_notifies_other_replicas(database, plan,
                                                                           clock) -> None:
    """The rotated token's facts leave a serving cache, a read that began before the rotation
    cannot put them back, and (PostgreSQL) the other replicas hear of it by NOTIFY."""
    batches = Batches.for_engine(database.engine)
    old = await refresh_token(database.engine, plan)
    facts = await batches.reader.find(old["digest"])
    assert facts is not None and facts.facts.used_at is None
    tcache = serving()
    tcache.put(old["digest"], facts, tcache.generation)
    assert tcache.get(old["digest"]) is facts
    generation = tcache.generation  # a read begins before the rotation...

    notified: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def heard(_conn, _pid, _channel, payload: str) -> None:  # noqa: ANN001
        if not notified.done():
            notified.set_result(payload)

    remote = None
    if database.backend == "postgresql":  # SQLite has no NOTIFY (the cache is off there)
        remote = await asyncpg.connect(PG_HOST.rsplit("/", 1)[0] + "/"
                                       + database.url.rsplit("/", 1)[1])
        await remote.add_listener(cache.CHANNEL, heard)
    try:
        at = clock.now() + timedelta(minutes=1)
        assert await batches.writer.write(rows_of(plan, 2), rotate=old["id"], at=at) is True
        assert tcache.get(old["digest"]) is None
        tcache.put(old["digest"], facts, generation)  # ...and would store the old facts
        assert tcache.get(old["digest"]) is None
        if remote is not None:
            payload = await asyncio.wait_for(notified, 5)
            assert Keys.from_payload(payload).token_ids == {old["id"]}
    finally:
        if remote is not None:
            await remote.close()
    fresh = await batches.reader.find(old["digest"])
    assert fresh is not None and fresh.facts.used_at == at


# --- TokenReader: batched lookups -------------------------------------------------------------

async def test_concurrent_finds_answer_each_digest_in_fewer_selects(database, plan) -> None:
    """Known digests get their own token's facts, unknown ones None, in fewer SELECTs."""
    reader = Batches.for_engine(database.engine).reader
    known = rows_of(plan, 3)
    async with database.engine.begin() as conn:
        await tokens.insert_rows(conn, known)
    unknown = [credentials.digest(f"tsa_unknown_{i}") for i in range(2)]
    asked = [known[0]["digest"], unknown[0], known[1]["digest"], known[0]["digest"],
             unknown[1], known[2]["digest"]]
    with statements(database.engine) as seen:
        found = await asyncio.gather(*(reader.find(digest) for digest in asked))
    assert [f.id if f is not None else None for f in found] == [
        known[0]["id"], None, known[1]["id"], known[0]["id"], None, known[2]["id"]]
    assert found[0].plan_id == plan.plan_id and found[0].kind == TokenKind.access
    assert 1 <= selects(seen) < len(asked)


# --- session_scope: idle sessions -------------------------------------------------------------

def session_events(session) -> list[str]:  # noqa: ANN001
    """The transactions of one session from now on (its listeners go with it)."""
    seen: list[str] = []
    for name in ("after_begin", "after_commit", "after_rollback"):
        event.listen(session.sync_session, name, lambda *_a, name=name: seen.append(name))
    return seen


@contextmanager
def engine_traffic(engine: AsyncEngine) -> Iterator[list[str]]:
    """Connection checkouts, transactions and statements on the engine."""
    seen: list[str] = []
    sync = engine.sync_engine
    hooks = {
        "checkout": lambda *_a: seen.append("checkout"),
        "begin": lambda *_a: seen.append("BEGIN"),
        "commit": lambda *_a: seen.append("COMMIT"),
        "rollback": lambda *_a: seen.append("ROLLBACK"),
        "before_cursor_execute": lambda _c, _cur, statement, *_a: seen.append(statement),
    }
    for name, hook in hooks.items():
        event.listen(sync, name, hook)
    try:
        yield seen
    finally:
        for name, hook in hooks.items():
            event.remove(sync, name, hook)


async def test_an_idle_session_neither_begins_nor_commits(database) -> None:
    """A unit of work that never touched the database costs it nothing: no connection, no
    BEGIN, no COMMIT, and no commit (or rollback) of the session either, on success or error."""
    maker = make_sessionmaker(database.engine)
    with engine_traffic(database.engine) as traffic:
        async with session_scope(maker) as session:
            seen = session_events(session)
        assert seen == []

        with pytest.raises(LookupError):
            async with session_scope(maker) as session:
                seen = session_events(session)
                raise LookupError("answered from the cache, then refused")
        assert seen == []
    assert traffic == []

    # The same scope with a read does begin and commit (so the probes above can see it).
    with engine_traffic(database.engine) as traffic:
        async with session_scope(maker) as session:
            seen = session_events(session)
            await session.execute(select(func.count()).select_from(Token))
    assert seen == ["after_begin", "after_commit"]
    assert "checkout" in traffic and "COMMIT" in traffic


async def test_a_session_with_only_commit_hooks_still_commits(database) -> None:
    """Work registered for after the commit (`session.info`, as `cache.changed` registers its
    second eviction) makes a session not idle: the scope commits, with no statement sent, so
    the eviction after the commit runs."""
    tcache = serving()
    plan_id = uuid.uuid4()
    maker = make_sessionmaker(database.engine)
    with engine_traffic(database.engine) as traffic:
        async with session_scope(maker) as session:
            seen = session_events(session)
            # What `cache.changed` registers; on PostgreSQL it also sends a NOTIFY, which would
            # make the session busy on its own.
            session.info.setdefault(cache._PENDING, []).append(Keys(plan_id=plan_id))
            # A read racing the change stores the old facts again...
            tcache.put("x", stored(plan_id=plan_id), tcache.generation)
            assert tcache.get("x") is not None
    assert seen == ["after_commit"] and traffic == []  # a commit with no connection
    assert tcache.get("x") is None  # ...and the commit evicts them


# --- compiled-cache keys ----------------------------------------------------------------------

def test_token_statements_have_a_compiled_cache_key() -> None:
    """Without a cache key SQLAlchemy compiles a statement on every execution (a multi-row
    `.values([...])` INSERT has none)."""
    by_digests = repository._BY_DIGESTS  # one statement, or one per dialect
    for statement in (tokens._INSERT, repository._BY_DIGEST,
                      *(by_digests.values() if isinstance(by_digests, dict) else [by_digests])):
        assert statement._generate_cache_key() is not None


async def test_token_statements_are_compiled_once(database, plan) -> None:
    """Executions of `insert_rows` and `find_by_digests` reuse their compiled form: whatever
    the number of rows or digests, the compiled cache holds one entry for one row (execute),
    one for many (executemany), and one for the lookup by many digests."""
    compiled: dict = {}
    async with database.engine.connect() as conn:
        conn = await conn.execution_options(compiled_cache=compiled)
        await tokens.insert_rows(conn, rows_of(plan, 1))
        await tokens.insert_rows(conn, rows_of(plan, 1))
        assert len(compiled) == 1
        # An executemany is compiled apart from a single execute (SQLAlchemy keys it so), once.
        await tokens.insert_rows(conn, rows_of(plan, 2))
        assert len(compiled) == 2
        await tokens.insert_rows(conn, rows_of(plan, 3))
        await tokens.insert_rows(conn, rows_of(plan, 7))
        assert len(compiled) == 2

        digests = [row["digest"] for row in rows_of(plan, 5)]
        for count in (1, 2, 5):
            await repository.find_by_digests(conn, digests[:count])
        assert len(compiled) == 3
        await conn.rollback()


# --- the token endpoint's placement cache -----------------------------------------------------

async def client_credentials(client, reg: Registered):  # noqa: ANN001, ANN201
    return await client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                             auth=(reg.client_id, reg.client_secret))


async def committed(database: Database, access_token: str) -> bool:
    async with database.engine.connect() as conn:
        return (await conn.execute(select(Token.id).where(
            Token.digest == credentials.digest(access_token)))).first() is not None


async def test_cached_placement_honours_a_period_change_and_a_deactivation(
        app, client, database, plan) -> None:
    """A custom integration's installation state and its plan's period are cached for the
    token endpoint: a new period shortens the very next token, a deactivation refuses it."""
    serve_cache(app)
    tcache = app.state.token_cache
    custom = await register_custom(client, plan)
    r = await client_credentials(client, custom)
    assert r.status_code == 200 and r.json()["expires_in"] == 3600
    assert tcache.get_placement(uuid.UUID(custom.id), plan.plan_id) is not None  # cached
    r = await client_credentials(client, custom)  # answered from the cache, group-committed
    assert r.status_code == 200 and await committed(database, r.json()["access_token"])

    r = await client.put(f"/v1/plans/{plan.plan_id}/token-expiration",
                         json={"value": 5, "unit": "minutes"}, headers=plan.admin.auth)
    assert r.status_code == 200, r.text
    r = await client_credentials(client, custom)
    assert r.status_code == 200 and r.json()["expires_in"] == 300

    base = f"/v1/plans/{plan.plan_id}/integrations/{custom.id}"
    assert (await client.post(f"{base}/deactivate", headers=plan.admin.auth)).status_code == 200
    r = await client_credentials(client, custom)
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"
    assert "installation_deactivated" in r.json()["error_description"]

    assert (await client.post(f"{base}/reactivate", headers=plan.admin.auth)).status_code == 200
    assert (await client_credentials(client, custom)).status_code == 200


async def test_cached_installations_honour_a_deactivation(app, client, database, operator,
                                                          plan) -> None:
    """A third-party integration's installations (read for a grant naming no plan) are cached:
    deactivating its only installation refuses the very next grant."""
    tp = await register_third_party(client, operator)
    await install(app, plan, tp)
    serve_cache(app)
    r = await client_credentials(client, tp)
    assert r.status_code == 200, r.text
    assert app.state.token_cache.get_placement(uuid.UUID(tp.id), None) is not None  # cached
    assert (await client_credentials(client, tp)).status_code == 200

    r = await client.post(f"/v1/plans/{plan.plan_id}/integrations/{tp.id}/deactivate",
                          headers=plan.admin.auth)
    assert r.status_code == 200 and r.json()["state"] == "deactivated"
    r = await client_credentials(client, tp)
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"
    assert "installation_deactivated" in r.json()["error_description"]


# --- rotation against revocation --------------------------------------------------------------

async def test_a_refresh_token_revoked_after_its_lookup_is_not_rotated(database, plan,
                                                                      clock) -> None:
    """The exchange read the token, then its grant was revoked: the rotation finds it revoked,
    writes nothing, and the exchange fails (rules 3 and 8)."""
    batches = Batches.for_engine(database.engine)
    family = uuid.uuid4()
    [old] = [tokens.new_row(kind=TokenKind.refresh, plan_id=plan.plan_id, now=clock.now(),
                            family_id=family)[0]]
    async with database.engine.begin() as conn:
        await tokens.insert_rows(conn, [old])
    stored = await batches.reader.find(old["digest"])
    assert stored is not None
    await batches.revoker.revoke(stored, actor="test", reason="revoked", at=clock.now())
    fresh = rows_of(plan, 2)
    for row in fresh:
        row["family_id"] = family
    assert await batches.writer.write(fresh, rotate=stored.id, at=clock.now()) is False
    assert await stored_ids(database.engine, ids(fresh)) == set()


async def test_a_grant_revoked_while_a_rotation_commits_loses_the_rotated_pair_too(
        database, plan, clock) -> None:
    """The rotation holds its token's lock when the revocation starts: the revocation waits,
    then also revokes the pair the rotation added (its second statement sees them)."""
    batches = Batches.for_engine(database.engine)
    family = uuid.uuid4()
    old = tokens.new_row(kind=TokenKind.refresh, plan_id=plan.plan_id, now=clock.now(),
                         family_id=family)[0]
    async with database.engine.begin() as conn:
        await tokens.insert_rows(conn, [old])
    stored = await batches.reader.find(old["digest"])
    fresh = rows_of(plan, 2)
    for row in fresh:
        row["family_id"] = family
    if database.backend != "postgresql":  # SQLite writers take turns: one after the other
        assert await batches.writer.write(fresh, rotate=stored.id, at=clock.now()) is True
        await batches.revoker.revoke(stored, actor="test", reason="revoked", at=clock.now())
    else:
        rotation = await database.engine.connect()
        try:
            await rotation.begin()
            await rotation.execute(update(Token).where(Token.id == stored.id)
                                   .values(used_at=clock.now()))
            await tokens.insert_rows(rotation, fresh)
            revoking = asyncio.ensure_future(batches.revoker.revoke(
                stored, actor="test", reason="revoked", at=clock.now()))
            await asyncio.sleep(0.3)
            assert not revoking.done()  # waiting for the rotation's lock
            await rotation.commit()
            await asyncio.wait_for(revoking, 10)
        finally:
            await rotation.close()
    async with database.engine.connect() as conn:
        revoked = dict((await conn.execute(
            select(Token.id, Token.revoked_at.is_not(None))
            .where(Token.family_id == family))).all())
    assert revoked == {old["id"]: True, **{row["id"]: True for row in fresh}}
