"""The token cache (app/tokens/cache.py): bounded, evicted by what changed, never serving past
its listener's heartbeat, and invalidated across processes by PostgreSQL NOTIFY."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import asyncpg

from app.db import make_sessionmaker, session_scope
from app.tokens import cache
from app.tokens.cache import Keys, Listener, TokenCache
from app.tokens.repository import StoredToken
from app.tokens.rules import TokenFacts
from tests.conftest import PG_HOST

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def stored(*, plan_id: uuid.UUID | None = None, integration_id: uuid.UUID | None = None,
           family_id: uuid.UUID | None = None) -> StoredToken:
    facts = TokenFacts(kind="access", issued_at=NOW, expires_at=None, revoked_at=None,
                       used_at=None, period=None)
    return StoredToken(uuid.uuid4(), "access", plan_id or uuid.uuid4(), None, integration_id,
                       None, "", NOW, None, "abcd", None, None, None, family_id, facts)


def serving(size: int = 10, bound: float = 60.0) -> TokenCache:
    c = TokenCache(size, bound)
    c.heartbeat(time.monotonic())
    return c


def test_lru_is_bounded() -> None:
    c = serving(size=2)
    a, b, d = stored(), stored(), stored()
    c.put("a", a, c.generation)
    c.put("b", b, c.generation)
    assert c.get("a") is a  # "a" is now the most recently used
    c.put("d", d, c.generation)
    assert c.get("b") is None and c.get("a") is a and c.get("d") is d
    assert len(c) == 2


def test_eviction_by_each_key_and_indexes_stay_clean() -> None:
    c = serving()
    plan, integ, family = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    tokens = {"p": stored(plan_id=plan), "i": stored(integration_id=integ),
              "f": stored(family_id=family), "t": stored(), "other": stored()}
    for digest, facts in tokens.items():
        c.put(digest, facts, c.generation)
    c.evict(Keys(plan_id=plan))
    assert c.get("p") is None and c.get("i") is not None
    c.evict(Keys(integration_id=integ))
    c.evict(Keys(family_id=family))
    c.evict(Keys(frozenset({tokens["t"].id})))
    assert [d for d in tokens if c.get(d) is not None] == ["other"]
    assert not c._by_plan.keys() - {tokens["other"].plan_id}
    assert not c._by_integration and not c._by_family and len(c._by_id) == 1
    c.evict(Keys(everything=True))
    assert len(c) == 0


def test_users_viewers_and_plans_facts_are_evicted_by_their_keys_alone() -> None:
    c = serving()
    user, other, plan, elsewhere = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for who in (user, other):
        c.put_user(who, f"facts of {who}", c.users_generation)
        c.put_viewer(who, f"viewer of {who}", c.users_generation)
    for which in (plan, elsewhere):
        for what in ("policy", "history"):
            c.put_plan(what, which, f"{what} of {which}", c.generation)
    c.evict(Keys(user_id=user))
    assert c.get_user(user) is None and c.get_viewer(user) is None
    assert c.get_user(other) == f"facts of {other}" and c.get_viewer(other) is not None
    c.evict(Keys(plan_id=plan))
    assert c.get_plan("policy", plan) is None and c.get_plan("history", plan) is None
    assert c.get_plan("history", elsewhere) == f"history of {elsewhere}"
    generation = c.generation  # a read of the plan begins, a change comes: not stored
    c.evict(Keys(plan_id=elsewhere))
    c.put_plan("policy", elsewhere, "old", generation)
    assert c.get_plan("policy", elsewhere) is None
    began = c.users_generation  # a read of a user begins, the user changes: not kept
    c.evict(Keys(user_id=other))
    c.put_user(other, "old facts", began)
    c.put_viewer(other, "old viewer", began)
    assert c.get_user(other) is None and c.get_viewer(other) is None
    c.put_viewer(other, f"viewer of {other}", c.users_generation)
    began = c.users_generation  # a token's change does not stop a user's read being kept
    c.evict(Keys(plan_id=uuid.uuid4(), token_ids=frozenset({uuid.uuid4()})))
    c.put_user(other, f"facts of {other}", began)
    assert c.get_user(other) == f"facts of {other}"
    c.evict(Keys(everything=True))
    assert c.get_viewer(other) is None and c.get_user(other) is None


def test_a_read_that_raced_an_eviction_is_not_stored() -> None:
    c = serving()
    generation = c.generation  # a read begins...
    c.evict(Keys(plan_id=uuid.uuid4()))  # ...something changes meanwhile...
    c.put("x", stored(), generation)  # ...so what it read may be old: not stored
    assert c.get("x") is None


def test_no_answers_without_a_recent_heartbeat() -> None:
    c = TokenCache(10, bound_seconds=0.05)
    c.put("x", stored(), c.generation)
    assert c.get("x") is None and len(c) == 0  # never started: off
    c.heartbeat(time.monotonic())
    c.put("x", facts := stored(), c.generation)
    assert c.get("x") is facts
    time.sleep(0.06)  # the bound passes with no heartbeat: off, whatever it holds
    assert c.get("x") is None
    assert TokenCache(0).serving is False  # size 0: off for good


def test_payloads_round_trip_and_fail_safe() -> None:
    keys = Keys(frozenset({uuid.uuid4(), uuid.uuid4()}), uuid.uuid4(), uuid.uuid4(), uuid.uuid4(),
                user_id=uuid.uuid4())
    assert Keys.from_payload(keys.payload()) == keys
    many = Keys(frozenset(uuid.uuid4() for _ in range(500)))
    assert len(many.payload()) < 8000 and Keys.from_payload(many.payload()).everything
    assert Keys.from_payload("garbage").everything
    assert Keys.from_payload('{"t": ["not-a-uuid"]}').everything


async def test_changed_evicts_at_once_and_again_after_commit(database) -> None:
    c = serving()
    plan = uuid.uuid4()
    c.put("x", stored(plan_id=plan), c.generation)
    maker = make_sessionmaker(database.engine)
    async with session_scope(maker) as session:
        await cache.changed(session, plan_id=plan)
        assert c.get("x") is None  # at once, before the commit
        # A read between the change and its commit still sees the old facts and stores them.
        c.put("x", stored(plan_id=plan), c.generation)
        assert c.get("x") is not None
    assert c.get("x") is None  # the commit evicted them again


async def test_notify_reaches_a_listener_only_on_commit(pg) -> None:
    database = pg  # LISTEN/NOTIFY is PostgreSQL's
    c = TokenCache(10, bound_seconds=1.0)
    listener = Listener.for_engine(c, database.engine, heartbeat_seconds=0.1)
    assert listener is not None
    listener.start()
    try:
        await asyncio.wait_for(listener.connected.wait(), 5)
        await asyncio.sleep(0.05)
        assert c.serving
        plan = uuid.uuid4()
        remote = await asyncpg.connect(PG_HOST.rsplit("/", 1)[0] + "/"
                                       + database.url.rsplit("/", 1)[1])
        try:
            # Another process's change: nothing is evicted here until it commits.
            c.put("x", stored(plan_id=plan), c.generation)
            async with remote.transaction():
                await remote.execute("SELECT pg_notify($1, $2)", cache.CHANNEL,
                                     Keys(plan_id=plan).payload())
                await asyncio.sleep(0.2)
                assert c.get("x") is not None
            started = time.monotonic()
            while c.get("x") is not None:
                assert time.monotonic() - started < 1.0
                await asyncio.sleep(0.005)
            # A rolled-back change says nothing.
            c.put("y", stored(plan_id=plan), c.generation)
            tx = remote.transaction()
            await tx.start()
            await remote.execute("SELECT pg_notify($1, $2)", cache.CHANNEL,
                                 Keys(plan_id=plan).payload())
            await tx.rollback()
            await asyncio.sleep(0.3)
            assert c.get("y") is not None

            # The listener's connection is cut: the cache goes off (and empty) at once, and
            # comes back by itself.
            pid = await remote.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
                "AND datname = current_database()", cache.APP_NAME)
            assert pid is not None
            await remote.execute("SELECT pg_terminate_backend($1)", pid)
            started = time.monotonic()
            while c.serving:
                assert time.monotonic() - started < 1.0
                await asyncio.sleep(0.005)
            assert len(c) == 0
            await asyncio.wait_for(listener.connected.wait(), 5)
            await asyncio.sleep(0.2)
            assert c.serving
        finally:
            await remote.close()
    finally:
        await listener.stop()
    assert not c.serving



def test_clients_are_cached_by_their_credentials_and_evicted_with_their_integration() -> None:
    c = serving()
    integ, other = uuid.uuid4(), uuid.uuid4()
    c.put_client("key-a", integ, "caller-a", c.generation)
    c.put_client("key-b", other, "caller-b", c.generation)
    assert c.get_client("key-a") == "caller-a" and c.get_client("wrong") is None
    c.evict(Keys(token_ids=frozenset({uuid.uuid4()})))
    assert c.get_client("key-a") == "caller-a"  # a token change leaves clients alone
    c.evict(Keys(integration_id=integ))
    assert c.get_client("key-a") is None and c.get_client("key-b") == "caller-b"
    generation = c.generation
    c.evict(Keys(plan_id=uuid.uuid4()))
    c.put_client("key-a", integ, "stale", generation)  # read before the eviction: not kept
    assert c.get_client("key-a") is None
    c.disable()
    assert c.get_client("key-b") is None


def test_users_facts_are_read_again_after_a_while_and_only_while_serving(monkeypatch) -> None:  # noqa: ANN001
    """A role changed outside the API (an admin demoted in the database) is seen within
    USER_FACTS_SECONDS; nothing is answered while the listener is unhealthy, or after a clear."""
    c = serving()
    user = uuid.uuid4()
    c.put_user(user, "admin facts", c.users_generation)
    assert c.get_user(user) == "admin facts"
    start = time.monotonic()
    monkeypatch.setattr(cache.time, "monotonic", lambda: start + cache.USER_FACTS_SECONDS + 1)
    c.heartbeat(start + cache.USER_FACTS_SECONDS + 1)
    assert c.get_user(user) is None  # too old: read again
    c.put_user(user, "member facts", c.users_generation)
    assert c.get_user(user) == "member facts"
    began = c.users_generation
    c.clear()
    assert c.get_user(user) is None
    c.put_user(user, "member facts", began)  # read before the clear: not kept
    assert c.get_user(user) is None
    c.put_user(user, "member facts", c.users_generation)
    c.disable()
    c.put_user(user, "again", c.users_generation)
    assert c.get_user(user) is None
