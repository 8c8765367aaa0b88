"""Listings kept as answered while the token cache serves (`cache.read_listing`): pages of a
plan's tokens, of a user's and of the plan's audit trail. Each is answered as an application
reading everything from the database answers it, after every kind of change (a token made by
each way there is, revoked, a period, an integration's review) and as time passes its rows'
instants (an expiry, a review deadline); rows another replica adds are heard from the database's
own trigger; and a read that began before an insert is never kept."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from app.integrations.access import IntegrationFacts
from app.plans.expiry import Period, Spell, Unit, death
from app.tokens import cache, repository
from app.tokens.cache import Listener
from app.tokens.rules import TokenFacts, check, settled_until
from tests.conftest import PlanFixture
from tests.console.conftest import sign_in
from tests.console.test_cached_pages import held_read
from tests.integrations.test_review_api import install, review
from tests.integrations.test_token_client_cache import serve_cache, token
from tests.oauth2.conftest import register_custom, register_third_party


def _plan_key(plan: PlanFixture) -> tuple:
    return ("tokens", True, plan.plan_id, None, None, 100, 0)


async def test_kept_listings_answer_as_the_database_after_every_change_and_instant(
        app, client, uncached, plan: PlanFixture, operator, clock) -> None:  # noqa: ANN001
    tp = await register_third_party(client, operator)  # not reviewed: a deadline in 30 days
    await install(app, plan, tp)
    custom = await register_custom(client, plan)
    serve_cache(app)
    kept = app.state.token_cache
    member = await plan.add_user("member")
    base = f"/v1/plans/{plan.plan_id}"
    auth = {"admin": plan.admin.auth, "member": member.auth}
    reads = [(f"{base}/tokens", "admin"), (f"{base}/tokens?kind=access", "admin"),
             (f"{base}/tokens?limit=2", "admin"), (f"{base}/audit", "admin"),
             ("/v1/me/tokens", "member"), ("/v1/me/tokens", "admin")]

    async def same() -> list[str]:
        pages = []
        for path, who in reads:
            headers = auth[who]
            first = await client.get(path, headers=headers)
            again = await client.get(path, headers=headers)  # from what was kept, if it was
            read = await uncached.get(path, headers=headers)
            assert first.status_code == again.status_code == read.status_code == 200, path
            assert first.json() == again.json() == read.json(), path
            assert first.content == again.content, path
            pages.append(first.text)
        return pages

    pages = await same()
    assert kept.get_listing(_plan_key(plan), clock.now()) is not None
    assert kept.get_listing(("audit", plan.plan_id, 50, None), clock.now()) is not None
    # A token made by each way there is: Basic (the batched writer), client_credentials.
    made = await client.post("/v1/me/tokens", json={"name": "fresh"},
                             auth=(member.email, member.password))
    assert made.status_code == 201
    pages = await same()
    assert made.json()["id"] in pages[0] and made.json()["id"] in pages[4]
    issued = await token(client, tp)
    assert issued.status_code == 200, issued.text
    pages = await same()
    assert pages[1].count('"kind":"access"') == 1 and '"status":"active"' in pages[1]
    # Revoked by its owner.
    r = await client.delete(f"/v1/me/tokens/{made.json()['id']}", headers=member.auth)
    assert r.status_code == 204
    pages = await same()
    assert '"status":"revoked"' in pages[0] and "token.revoked" in pages[3]
    # A period of a day, then time passing up to a row's instant and past it.
    r = await client.put(f"{base}/token-expiration", json={"value": 1, "unit": "days"},
                         headers=plan.admin.auth)
    assert r.status_code == 200, r.text
    pages = await same()
    assert '"status":"expired"' not in pages[4]
    clock.advance(hours=23, minutes=59)  # the first tokens: a minute to live
    assert (await same())[4] == pages[4]
    for who, user in (("admin", plan.admin), ("member", member)):
        made = await client.post("/v1/me/tokens", json={"name": "next"},
                                 auth=(user.email, user.password))
        auth[who] = {"Authorization": f"Bearer {made.json()['token']}"}
    clock.advance(minutes=2)  # the first tokens, made at the start, are a day old
    pages = await same()
    assert '"status":"expired"' in pages[4]
    # The access token's own lifetime is an hour: expired by now. The period goes (those it
    # expired stay expired, rule 4); a new access token is active until its platform review is
    # revoked (an event of the platform's, in the trail through the installation).
    assert (await client.delete(f"{base}/token-expiration",
                                headers=auth["admin"])).status_code == 204
    assert '"status":"expired"' in (await same())[4]
    assert (await token(client, tp)).status_code == 200
    pages = await same()
    assert '"status":"active"' in pages[1]
    assert (await review(client, operator, tp, status="revoked")).status_code == 200
    pages = await same()
    assert '"status":"integration_refused"' in pages[1] and "integration.review" in pages[3]
    # A token an admin generates for the plan's own integration (an ORM insert).
    r = await client.post(f"{base}/integrations/{custom.id}/tokens", json={"name": "in-house"},
                          headers=auth["admin"])
    assert r.status_code == 201, r.text
    pages = await same()
    assert r.json()["id"] in pages[0] and "in-house" in pages[0]


async def test_a_kept_page_holds_until_a_rows_instant_and_not_at_it(
        app, client, uncached, plan: PlanFixture, operator, clock) -> None:  # noqa: ANN001
    """An access token (an hour's lifetime) under a review deadline thirty days away: the kept
    page holds until the token's hour is over, to the microsecond, and not at that instant."""
    tp = await register_third_party(client, operator)
    await install(app, plan, tp)
    serve_cache(app)
    kept = app.state.token_cache
    path = f"/v1/plans/{plan.plan_id}/tokens?kind=access"
    assert (await token(client, tp)).status_code == 200
    first = await client.get(path, headers=plan.admin.auth)
    assert '"status":"active"' in first.text
    key = ("tokens", True, plan.plan_id, None, "access", 100, 0)
    entry = kept._listings[key]
    # The page changes when the access token's hour is over (before the deadline).
    until = entry[3]
    assert until is not None and until == clock.now() + timedelta(hours=1)
    clock.set(until - timedelta(microseconds=1))
    assert kept.get_listing(key, clock.now()) is not None
    assert (await client.get(path, headers=plan.admin.auth)).content == first.content
    clock.set(until)
    assert kept.get_listing(key, clock.now()) is None
    later = await client.get(path, headers=plan.admin.auth)
    assert '"status":"expired"' in later.text
    assert later.json() == (await uncached.get(path, headers=plan.admin.auth)).json()


def _facts(rng, now: datetime) -> TokenFacts:  # noqa: ANN001
    def instant() -> datetime | None:
        return None if rng.random() < 0.3 else now + timedelta(
            minutes=rng.randint(-3 * 24 * 60, 3 * 24 * 60))

    integration = None
    if rng.random() < 0.6:
        integration = IntegrationFacts(
            kind=rng.choice(["custom", "third_party"]),
            review_status=rng.choice(["not_reviewed", "in_review", "approved", "not_approved"]),
            review_deadline=instant(), exception_until=instant(),
            data_access=rng.choice(["limited", "extended"]), judged_third_party=rng.random() < .3)
    period = None if rng.random() < 0.3 else Period(rng.randint(1, 3), rng.choice(list(Unit)))
    issued = now - timedelta(minutes=rng.randint(0, 4 * 24 * 60))
    return TokenFacts(kind=rng.choice(["personal", "access", "integration"]), issued_at=issued,
                      expires_at=instant(), revoked_at=None, used_at=None, period=period,
                      integration=integration,
                      installation_state=rng.choice(["active", "active", "deactivated", None]))


def test_a_tokens_answer_holds_until_the_instant_it_names() -> None:
    """`settled_until` against `check` and `death` themselves: at every instant from `now` to
    just before the one it names, both answer as at `now`."""
    import random

    rng = random.Random(20261206)
    now = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
    for _ in range(3000):
        facts = _facts(rng, now)
        until = settled_until(facts, now)
        spells = [Spell(facts.period, None, None)] if facts.period else []
        end = until or now + timedelta(days=400)
        span = (end - now) / timedelta(microseconds=1)
        instants = [now, end - timedelta(microseconds=1)] + [
            now + timedelta(microseconds=rng.random() * span) for _ in range(5)]
        for at in instants:
            assert check(facts, at) == check(facts, now), (facts, now, at, until)
            assert death(facts.issued_at, facts.expires_at, spells, at) == \
                death(facts.issued_at, facts.expires_at, spells, now), (facts, at)


async def test_a_listing_read_before_an_insert_is_not_kept(
        app, client, plan: PlanFixture, monkeypatch) -> None:  # noqa: ANN001
    serve_cache(app)
    kept = app.state.token_cache
    path = f"/v1/plans/{plan.plan_id}/tokens"
    entered, go = held_read(monkeypatch, repository, repository._listing(frozenset({"plan_id"})))
    page = asyncio.create_task(client.get(path, headers=plan.admin.auth))
    await entered.wait()
    made = await client.post("/v1/me/tokens", json={"name": "late"},
                             auth=(plan.admin.email, plan.admin.password))
    assert made.status_code == 201
    go.set()
    assert made.json()["id"] not in (await page).text  # read before the insert
    assert kept._listings == {}
    assert made.json()["id"] in (await client.get(path, headers=plan.admin.auth)).text


async def test_rows_another_replica_adds_are_heard_from_the_database(
        app, client, database, plan: PlanFixture, other_plan: PlanFixture,  # noqa: ANN001
        clock) -> None:  # noqa: ANN001
    """Rows inserted by another process (another replica, or a person at psql): the trigger of
    migration 0010 names their plans, and this replica's listener drops those plans' listings
    only; an event of the platform's drops every plan's."""
    kept = app.state.token_cache
    listener = Listener.for_engine(kept, database.engine, heartbeat_seconds=0.1)
    if database.backend != "postgresql":
        assert listener is None  # no NOTIFY: the cache never serves, nothing is kept
        return
    assert listener is not None
    listener.start()
    remote = await asyncpg.connect(database.url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await asyncio.wait_for(listener.connected.wait(), 5)
        started = time.monotonic()
        while not kept.serving:
            assert time.monotonic() - started < 2
            await asyncio.sleep(0.01)
        ours = f"/v1/plans/{plan.plan_id}/tokens"
        theirs = f"/v1/plans/{other_plan.plan_id}/tokens"
        audit = f"/v1/plans/{plan.plan_id}/audit"
        for path, who in ((ours, plan), (theirs, other_plan), (audit, plan)):
            assert (await client.get(path, headers=who.admin.auth)).status_code == 200
        assert len(kept._listings) == 3

        async def gone(key: tuple) -> None:
            started = time.monotonic()
            while kept.get_listing(key, clock.now()) is not None:
                assert time.monotonic() - started < 1.0, key
                await asyncio.sleep(0.005)

        made = uuid.uuid4()
        await remote.execute(
            "INSERT INTO tokens (id, kind, digest, hint, plan_id, user_id, scopes, issued_at)"
            " VALUES ($1, 'personal', $2, 'abcd', $3, $4, '', $5)",
            made, uuid.uuid4().hex, plan.plan_id, plan.admin.user_id, clock.now())
        await gone(_plan_key(plan))
        assert kept.get_listing(_plan_key(other_plan), clock.now()) is not None
        assert str(made) in (await client.get(ours, headers=plan.admin.auth)).text
        # The platform's decision on an integration: every plan's audit trail may show it.
        await remote.execute(
            "INSERT INTO audit_events (id, occurred_at, actor, action, plan_id, target_type,"
            " target_id, detail) VALUES ($1, $2, 'operator:x', 'integration.reviewed', NULL,"
            " 'integration', 'x', '{}')", uuid.uuid4(), clock.now())
        await gone(_plan_key(other_plan))
        await gone(("audit", plan.plan_id, 50, None))
        # Rows deleted by hand (a trail pruned): heard as well, for their plans.
        for path, who in ((ours, plan), (theirs, other_plan)):
            assert (await client.get(path, headers=who.admin.auth)).status_code == 200
        await remote.execute("DELETE FROM tokens WHERE id = $1", made)
        await gone(_plan_key(plan))
        assert kept.get_listing(_plan_key(other_plan), clock.now()) is not None
        assert str(made) not in (await client.get(ours, headers=plan.admin.auth)).text
    finally:
        await remote.close()
        await listener.stop()


async def test_listings_are_not_kept_while_the_cache_does_not_serve(
        app, client, plan: PlanFixture) -> None:  # noqa: ANN001
    """No listener heard from (SQLite, or a lost connection): every page is read."""
    kept = app.state.token_cache
    assert not kept.serving
    r = await client.get(f"/v1/plans/{plan.plan_id}/tokens", headers=plan.admin.auth)
    assert r.status_code == 200
    assert kept._listings == {}


def test_what_the_trigger_sends_is_read_as_listings_only() -> None:
    """`Keys` of the triggers' payloads name listings only: they move the token facts'
    generation no more than they drop their entries; anything unreadable clears everything."""
    plan = uuid.uuid4()
    assert cache.Keys.from_payload('{"l":"all"}') == cache.Keys(listed_all=True)
    assert cache.Keys.from_payload(f'{{"l":["{plan}"]}}') == cache.Keys(listed=frozenset({plan}))
    assert cache.Keys.from_payload('{"l":[1]}').everything
    assert cache.Keys.from_payload('{"l":{"a":1}}').everything
    kept = cache.TokenCache(10)
    before = kept.generation
    kept.evict(cache.Keys(listed=frozenset({plan})))
    assert kept.generation == before and kept.listings_generation == 1
    kept.evict(cache.Keys())  # an empty change evicts as any change does
    assert kept.generation == before + 1
    # Tokens changed in a plan named: that plan's listings go, and only them; tokens of plans
    # not named (a payload without "l", or "l": null), or any other change: every listing.
    other, now = uuid.uuid4(), datetime(2026, 12, 6, tzinfo=UTC)
    kept.heartbeat(time.monotonic() + 3600)

    def keep_both() -> None:
        for p in (plan, other):
            kept.put_listing(("x", p), p, b"[]", now, None, kept.listings_generation)

    def left() -> set:
        return {k[1] for k in kept._listings}

    for change, survivors in (
            (cache.Keys(frozenset({uuid.uuid4()}), listed=frozenset({plan})), {other}),
            (cache.Keys(family_id=uuid.uuid4(), listed=frozenset({plan})), {other}),
            (cache.Keys.from_payload(f'{{"t":["{uuid.uuid4()}"],"l":["{other}"]}}'), {plan}),
            (cache.Keys.from_payload(f'{{"t":["{uuid.uuid4()}"],"l":null}}'), set()),
            (cache.Keys(frozenset({uuid.uuid4()})), set()),
            (cache.Keys(plan_id=plan, listed=frozenset({plan})), set()),
            (cache.Keys(user_id=uuid.uuid4()), set())):
        keep_both()
        kept.evict(change)
        assert left() == survivors, change
    many = cache.Keys(frozenset(uuid.uuid4() for _ in range(60)),
                      listed=frozenset(uuid.uuid4() for _ in range(60)))
    assert len(many.payload()) < 8000 and cache.Keys.from_payload(many.payload()).listed_all


async def test_a_read_between_a_flush_and_its_commit_is_dropped_at_the_commit(
        app, client, plan: PlanFixture) -> None:  # noqa: ANN001
    """A page read while a unit of work has inserted a token but not committed it shows the
    page without it, and may be kept; the commit (its connection back in the pool) drops it."""
    from app.db import make_sessionmaker, session_scope
    from app.tokens import service
    from app.tokens.rules import TokenKind

    serve_cache(app)
    kept = app.state.token_cache
    path, now = f"/v1/plans/{plan.plan_id}/tokens", app.state.clock.now()
    assert (await client.get(path, headers=plan.admin.auth)).status_code == 200
    async with session_scope(make_sessionmaker(app.state.engine)) as session:
        made, _secret = service.issue(session, kind=TokenKind.personal, plan_id=plan.plan_id,
                                      user_id=plan.admin.user_id, now=now)
        await session.flush()
        assert kept.get_listing(_plan_key(plan), now) is None  # at the statement
        if app.state.engine.dialect.name == "postgresql":  # SQLite: the writer locks readers
            seen = await client.get(path, headers=plan.admin.auth)
            assert str(made.id) not in seen.text
            assert kept.get_listing(_plan_key(plan), now) is not None
    assert kept.get_listing(_plan_key(plan), now) is None  # and again at the commit
    assert str(made.id) in (await client.get(path, headers=plan.admin.auth)).text


async def test_console_pages_kept_follow_the_window_and_the_viewers_speech(
        app, client, uncached, plan: PlanFixture, clock) -> None:  # noqa: ANN001
    """The console's Tokens page, filtered on "expiring within a day", keeps its rows until a
    token comes into that window, to the microsecond; its rows are kept per language and time
    zone, and the forms around them (the viewer's CSRF token) are drawn per request. The API
    access page follows its tokens' expiry as the API's listing does."""
    serve_cache(app)
    kept = app.state.token_cache
    csrf = await sign_in(client, plan.admin)
    uncached.cookies = client.cookies
    r = await client.put(f"/v1/plans/{plan.plan_id}/token-expiration",
                         json={"value": 3, "unit": "days"}, headers=plan.admin.auth)
    assert r.status_code == 200
    within = "/console/admin/tokens?within=1"
    pages = ("/console/admin/tokens", within, "/console/me/api-access")

    async def same() -> list[str]:
        seen = []
        for path in pages:
            first, again = await client.get(path), await client.get(path)
            read = await uncached.get(path)
            assert first.status_code == again.status_code == read.status_code == 200, path
            assert first.text == again.text == read.text, path
            seen.append(first.text)
        return seen

    shown = await same()
    assert "No token matches." in shown[1] and f'value="{csrf}"' in shown[0]
    assert "Revoke" in shown[2]
    # Two days later, to the microsecond before the admin's token comes into the window.
    clock.advance(days=2, microseconds=-1)
    assert (await same())[1] == shown[1]
    clock.advance(microseconds=1)
    shown = await same()
    assert "No token matches." not in shown[1] and plan.admin.email in shown[1]
    # In French, in another zone: the rows are drawn for that speech, and kept apart.
    client.cookies.set("tessera_lang", "fr")
    client.cookies.set("tessera_tz", "Asia/Tokyo")
    uncached.cookies = client.cookies
    french = await same()
    assert '<html lang="fr">' in french[1] and "Révoquer" in french[1]
    client.cookies.delete("tessera_lang")
    client.cookies.delete("tessera_tz")
    uncached.cookies = client.cookies
    assert (await same())[1] == shown[1]
    assert kept.get_listing(("page-api-access", plan.admin.user_id, 0, "en", "UTC"),
                            clock.now()) is not None
    # The admin's token (the fixture's, three days old) expires: both pages change at once.
    clock.advance(days=1)
    after = await same()
    assert after[1] != shown[1] and "expired" in after[2]


async def test_rows_added_by_this_process_drop_only_their_plans_listings(
        app, client, plan: PlanFixture, other_plan: PlanFixture) -> None:  # noqa: ANN001
    """The plans of the rows this process inserts are known (the statement's values, or the
    batches' own options): another plan's kept pages stay; an event of the platform's, which
    any plan's trail may show, drops them all."""
    serve_cache(app)
    kept = app.state.token_cache
    ours, audit = _plan_key(plan), ("audit", plan.plan_id, 50, None)
    for path in (f"/v1/plans/{plan.plan_id}/tokens", f"/v1/plans/{plan.plan_id}/audit"):
        assert (await client.get(path, headers=plan.admin.auth)).status_code == 200
    now = app.state.clock.now()
    # Another plan's token (the batched writer) and a failed sign-in there (its audit event).
    made = await client.post("/v1/me/tokens", json={},
                             auth=(other_plan.admin.email, other_plan.admin.password))
    assert made.status_code == 201
    wrong = await client.post("/v1/me/tokens", json={}, auth=(other_plan.admin.email, "wrong!"))
    assert wrong.status_code == 401
    assert kept.get_listing(ours, now) is not None and kept.get_listing(audit, now) is not None
    # This plan's: its pages go.
    made = await client.post("/v1/me/tokens", json={},
                             auth=(plan.admin.email, plan.admin.password))
    assert kept.get_listing(ours, now) is None and kept.get_listing(audit, now) is None
    assert made.json()["id"] in (await client.get(f"/v1/plans/{plan.plan_id}/tokens",
                                                  headers=plan.admin.auth)).text
    assert kept.get_listing(ours, now) is not None
    # An operator's sign-in is an event of the platform's (no plan): every page goes.
    from app.audit import service as audit_service
    from app.db import make_sessionmaker, session_scope

    async with session_scope(make_sessionmaker(app.state.engine)) as session:
        await audit_service.record(session, "operator:x", "operator.signed_in", None,
                                   "operator", "x", now)
    assert kept.get_listing(ours, now) is None


async def test_console_rows_name_people_read_after_their_read_began(
        app, client, uncached, plan: PlanFixture, monkeypatch) -> None:  # noqa: ANN001
    """The Tokens page's rows name the plan's people. A user is added, and makes a token,
    while the page's first read of the people is held: the rows kept must name that user, as
    a page read from the database does (the people the rows name are read once the listing's
    read began)."""
    from app.users import service as users

    serve_cache(app)
    await sign_in(client, plan.admin)
    uncached.cookies = client.cookies
    late = f"late-{uuid.uuid4().hex[:8]}@example.test"  # the database is shared by tests
    entered, go = held_read(monkeypatch, users, users._IN_PLAN)
    page = asyncio.create_task(client.get("/console/admin/tokens"))
    await entered.wait()
    r = await client.post(f"/v1/plans/{plan.plan_id}/users", headers=plan.admin.auth, json={
        "email": late, "name": "Late", "role": "member",
        "password": "a long enough password"})
    assert r.status_code == 201, r.text
    made = await client.post("/v1/me/tokens", json={"name": "late's"},
                             auth=(late, "a long enough password"))
    assert made.status_code == 201
    go.set()
    assert (await page).status_code == 200
    for _ in range(2):  # the rows as kept, then as answered from what was kept
        shown = await client.get("/console/admin/tokens")
        assert f"<td>{late}</td>" in shown.text
        assert shown.text == (await uncached.get("/console/admin/tokens")).text


def test_listings_kept_are_bounded_in_weight_and_age(monkeypatch) -> None:  # noqa: ANN001
    kept = cache.TokenCache(100, listings_bytes=10_000)  # TESSERA_TOKEN_LISTINGS_MEGABYTES
    kept.heartbeat(time.monotonic() + 3600)
    plan, now = uuid.uuid4(), datetime(2026, 12, 6, tzinfo=UTC)
    page = b"x" * 900
    for i in range(12):
        kept.put_listing(("p", i), plan, page, now, None, kept.listings_generation)
        if i == 8:
            assert kept.get_listing(("p", 0), now) == page  # used: kept longest
    assert kept._listings_weight <= 10_000
    assert kept.get_listing(("p", 0), now) == page and kept.get_listing(("p", 11), now) == page
    assert kept.get_listing(("p", 1), now) is None  # the least recently used went first
    # A page too large for its share is never kept.
    kept.put_listing(("big",), plan, b"x" * 1_300, now, None,
                     kept.listings_generation)
    assert kept.get_listing(("big",), now) is None
    # Judged at an instant: not answered for an earlier one (a clock set back).
    assert kept.get_listing(("p", 0), now - timedelta(microseconds=1)) is None
    # Rows edited by hand, which nobody announces: seen once a listing is that old.
    monkeypatch.setattr(cache, "LISTING_SECONDS", -1.0)
    assert kept.get_listing(("p", 0), now) is None
    kept.drop_listings()
    assert kept._listings_weight == 0 and not kept._listings


async def test_a_rotation_drops_only_its_plans_listings_here_and_says_which(
        app, client, database, plan: PlanFixture, other_plan: PlanFixture) -> None:  # noqa: ANN001
    """A refresh token rotated in one plan: the other plan's kept pages stay, on this replica
    and (the NOTIFY names the plan) on the others."""
    import json

    from tests.oauth2.test_fast_path import refresh_token_of

    reg = await register_custom(client, plan)
    serve_cache(app)
    kept = app.state.token_cache
    heard: list[str] = []
    remote = None
    if database.backend == "postgresql":
        remote = await asyncpg.connect(database.url.replace("postgresql+asyncpg", "postgresql"))
        await remote.add_listener(cache.CHANNEL, lambda *args: heard.append(args[-1]))
    try:
        spent = await refresh_token_of(database, plan, reg.id)
        for path, who in ((f"/v1/plans/{plan.plan_id}/tokens", plan),
                          (f"/v1/plans/{other_plan.plan_id}/tokens", other_plan)):
            assert (await client.get(path, headers=who.admin.auth)).status_code == 200
        now = app.state.clock.now()
        r = await client.post("/oauth2/token", data={"grant_type": "refresh_token",
                                                      "refresh_token": spent},
                              auth=(reg.client_id, reg.client_secret))
        assert r.status_code == 200, r.text
        assert kept.get_listing(_plan_key(plan), now) is None
        assert kept.get_listing(_plan_key(other_plan), now) is not None
        if remote is not None:
            started = time.monotonic()
            while not any('"t"' in p for p in heard):
                assert time.monotonic() - started < 2
                await asyncio.sleep(0.01)
            rotation = next(json.loads(p) for p in heard if '"t"' in p)
            assert rotation["l"] == [str(plan.plan_id)]
    finally:
        if remote is not None:
            await remote.close()
