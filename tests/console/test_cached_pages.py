"""The console's viewer and a plan's policy and history, kept beside the tokens' facts while the
token cache serves (as under `tessera serve`): after every change, every page and status
answer of an application whose cache serves is the one an application reading everything
from the database gives."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta

import httpx2
import pytest

from app.auth.principal import Principal
from app.console import i18n, web
from app.db import make_sessionmaker, session_scope
from app.plans import service as plans
from app.plans.expiry import Period, Unit
from app.tokens.cache import Keys
from tests.conftest import PlanFixture
from tests.console.conftest import sign_in
from tests.integrations.test_token_client_cache import serve_cache


async def test_cached_pages_answer_as_the_database_after_every_change(
        app, client, uncached, plan: PlanFixture, clock) -> None:  # noqa: ANN001
    serve_cache(app)
    cache = app.state.token_cache
    member = await plan.add_user("member")
    csrf = await sign_in(client, plan.admin)
    uncached.cookies = client.cookies
    tokens = (await client.get("/v1/me/tokens", headers=member.auth)).json()["items"]
    token_id = tokens[0]["id"]
    period = f"/v1/plans/{plan.plan_id}/token-expiration"
    reads = ["/console/admin/security/api-tokens", "/console/admin/tokens",
             "/console/admin/tokens?status=expired", "/console/me/api-access",
             f"/v1/plans/{plan.plan_id}/tokens/{token_id}/status",
             f"/v1/plans/{plan.plan_id}/tokens", f"/v1/plans/{plan.plan_id}/users"]

    async def same() -> list[str]:
        pages = []
        for path in reads:
            headers = admin if path.startswith("/v1") else {}
            kept = await client.get(path, headers=headers)
            read = await uncached.get(path, headers=headers)
            assert kept.status_code == read.status_code == 200, (path, kept.text)
            assert kept.text == read.text, path
            pages.append(kept.text)
        return pages

    async def change(*answers: httpx2.Response) -> list[str]:
        for r in answers:
            assert r.status_code in (200, 201, 204, 303), r.text
        return await same()

    clock.advance(days=2)  # the member's token is two days old; the admin's, made now, new
    made = await client.post("/v1/me/tokens", json={"name": "now"},
                             auth=(plan.admin.email, plan.admin.password))
    assert made.status_code == 201, made.text
    admin = {"Authorization": f"Bearer {made.json()['token']}"}
    pages = await same()
    assert cache.get_viewer(plan.admin.user_id) is not None
    assert cache.get_plan("policy", plan.plan_id) is not None
    assert cache.get_plan_users(plan.plan_id) is not None
    # A user added: the plan's users, kept, list it at once.
    pages = await change(await client.post(
        f"/v1/plans/{plan.plan_id}/users", headers=admin,
        json={"email": "added@example.test", "name": "Added", "role": "member",
              "password": "a long enough password"}))
    assert "added@example.test" in pages[6]
    assert cache.get_plan_users(plan.plan_id) is not None
    assert "Tokens expire" not in pages[0]
    # A period: the member's token, a day old, dies at once; a longer one cannot revive it, and
    # the explanation names the period that expired it (the plan's history, kept too).
    pages = await change(await client.put(period, json={"value": 1, "unit": "days"},
                                          headers=admin))
    assert "Tokens expire 1 days after they were generated." in pages[0]
    assert '"status":"expired"' in pages[4].replace(" ", "")
    assert cache.get_plan("history", plan.plan_id) is not None
    pages = await change(await client.put(period, json={"value": 1, "unit": "years"},
                                          headers=admin))
    assert "Tokens expire 1 years after they were generated." in pages[0]
    assert '"status":"expired"' in pages[4].replace(" ", "")
    pages = await change(await client.delete(period, headers=admin))
    assert "Tokens expire" not in pages[0]
    # DPoP required from the security page's own form, and no longer.
    pages = await change(await client.post("/console/admin/security/api-tokens/dpop",
                                           data={"csrf_token": csrf, "required": "yes"}))
    assert 'name="required" value="yes" checked' in pages[0]
    pages = await change(await client.post("/console/admin/security/api-tokens/dpop",
                                           data={"csrf_token": csrf}))
    assert 'name="required" value="yes" checked' not in pages[0]
    # The account's language: a browser without the choice's cookie follows the account.
    r = await client.post("/console/language", data={"csrf_token": csrf, "language": "fr",
                                                     "next": "/console/me/api-access"})
    assert r.status_code == 303
    client.cookies.delete("tessera_lang")
    uncached.cookies = client.cookies
    pages = await same()
    assert '<html lang="fr">' in pages[3]


async def test_what_a_rolled_back_change_of_the_plan_showed_is_not_kept(
        app, database, plan: PlanFixture, clock) -> None:  # noqa: ANN001
    """A read of the policy after the plan's change, in the same transaction, sees the change;
    the transaction rolls back: nothing of it may stay in the cache."""
    serve_cache(app)
    kept = app.state.token_cache
    actor = Principal(kind="user", plan_id=plan.plan_id, user_id=plan.admin.user_id,
                      role="admin", credential="password")
    with pytest.raises(RuntimeError):
        async with session_scope(make_sessionmaker(database.engine)) as session:
            await plans.set_period(session, plan.plan_id, Period(1, Unit.days), actor,
                                   clock.now())
            await session.flush()
            seen = await plans.policy(session, plan.plan_id, kept)
            assert (seen.expiration_value, seen.expiration_unit) == (1, "days")
            raise RuntimeError("the unit of work fails after the read")
    assert kept.get_plan("policy", plan.plan_id) is None
    async with session_scope(make_sessionmaker(database.engine)) as session:
        now_kept = await plans.policy(session, plan.plan_id, kept)
    assert now_kept.expiration_value is None and kept.get_plan("policy", plan.plan_id) is not None


def held_read(monkeypatch, module, statement) -> tuple[asyncio.Event, asyncio.Event]:  # noqa: ANN001
    """`module`'s first read of `statement` (by its `rows`) waits, once its rows are in, until
    the second event is set; the first is set when it has them."""
    entered, go, real = asyncio.Event(), asyncio.Event(), module.rows

    async def held(session, read, params):  # noqa: ANN001, ANN202
        got = await real(session, read, params)
        if read is statement and not entered.is_set():
            entered.set()
            await go.wait()
        return got

    monkeypatch.setattr(module, "rows", held)
    return entered, go


async def test_a_viewer_read_before_a_language_change_is_not_kept(
        app, client, uncached, plan: PlanFixture, monkeypatch) -> None:  # noqa: ANN001
    """Another browser's page reads the viewer; the language changes and commits (evicting it);
    only then does that read finish: what it read is shown once, never kept."""
    serve_cache(app)
    cache = app.state.token_cache
    csrf = await sign_in(client, plan.admin)
    cache.evict(Keys(user_id=plan.admin.user_id))
    entered, go = held_read(monkeypatch, web, web._VIEWER)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="https://tessera.test") as other:
        other.cookies = httpx2.Cookies({k: v for k, v in client.cookies.items()
                                        if k != "tessera_lang"})
        page = asyncio.create_task(other.get("/console/me/api-access"))
        await entered.wait()
        r = await client.post("/console/language", data={
            "csrf_token": csrf, "language": "fr", "next": "/console/me/api-access"})
        assert r.status_code == 303
        go.set()
        assert (await page).status_code == 200
        assert cache.get_viewer(plan.admin.user_id) is None
        after = await other.get("/console/me/api-access")
        uncached.cookies = other.cookies
        assert '<html lang="fr">' in after.text
        assert after.text == (await uncached.get("/console/me/api-access")).text


async def test_the_plans_users_read_before_a_user_is_added_are_not_kept(
        app, client, plan: PlanFixture, monkeypatch) -> None:  # noqa: ANN001
    """A listing of the plan's users reads; a user is added and committed; only then does that
    read finish: what it read is answered once, never kept. And the users' list of every plan
    goes when another replica announces a user (the NOTIFY's payload, as heard)."""
    from app.users import service as users

    serve_cache(app)
    cache = app.state.token_cache
    listing = f"/v1/plans/{plan.plan_id}/users"
    entered, go = held_read(monkeypatch, users, users._IN_PLAN)
    page = asyncio.create_task(client.get(listing, headers=plan.admin.auth))
    await entered.wait()
    r = await client.post(listing, headers=plan.admin.auth, json={
        "email": "late@example.test", "name": "Late", "role": "member",
        "password": "a long enough password"})
    assert r.status_code == 201, r.text
    go.set()
    assert "late@example.test" not in (await page).text  # read before the addition
    assert cache.get_plan_users(plan.plan_id) is None
    r = await client.get(listing, headers=plan.admin.auth)
    assert "late@example.test" in r.text
    assert cache.get_plan_users(plan.plan_id) is not None
    cache.evict(Keys.from_payload(Keys(user_id=uuid.uuid4()).payload()))
    assert cache.get_plan_users(plan.plan_id) is None


async def test_the_plans_integrations_kept_answer_as_the_database_after_every_change(
        app, client, uncached, operator, plan: PlanFixture, clock) -> None:  # noqa: ANN001
    """The plan's integrations (API and console), kept while the cache serves, after each
    change of what they show: an integration created, installed by consent, reviewed, given
    an exception, judged third-party, kept by the admin, deactivated, reactivated."""
    from tests.integrations.test_review_api import STEPS, install
    from tests.oauth2.conftest import register_custom, register_third_party

    serve_cache(app)
    cache = app.state.token_cache
    await sign_in(client, plan.admin)
    uncached.cookies = client.cookies
    listing = f"/v1/plans/{plan.plan_id}/integrations"

    async def same() -> str:
        kept = await client.get(listing, headers=plan.admin.auth)
        read = await uncached.get(listing, headers=plan.admin.auth)
        assert kept.status_code == read.status_code == 200, kept.text
        assert kept.json() == read.json()
        page = await client.get("/console/admin/integrations")
        assert page.text == (await uncached.get("/console/admin/integrations")).text
        assert cache.get_plan("integrations", plan.plan_id) is not None
        return kept.text

    async def change(r: httpx2.Response) -> str:
        assert r.status_code in (200, 201, 204), r.text
        return await same()

    await same()
    custom = await register_custom(client, plan)
    assert custom.client_id in await same()
    third = await register_third_party(client, operator)
    await install(app, plan, third)
    assert third.client_id in await same()
    shown = await change(await client.put(f"/v1/integrations/{third.id}/review",
                                          headers=operator, json={
                                              "status": "approved",
                                              "steps": dict.fromkeys(STEPS, True)}))
    assert '"review_status":"approved"' in shown
    until = (clock.now() + timedelta(days=5)).isoformat()
    await change(await client.put(f"/v1/integrations/{custom.id}/judgement", headers=operator,
                                  json={"deactivate_at": until, "review_deadline": until}))
    shown = await change(await client.put(f"/v1/integrations/{custom.id}/exception",
                                          headers=operator, json={"until": until}))
    assert '"exception_until":null' in shown  # the third-party one has none
    shown = await change(await client.post(f"{listing}/{custom.id}/confirm-keep",
                                           headers=plan.admin.auth))
    assert '"keep_confirmed_at":null' in shown and shown.count('"keep_confirmed_at"') == 2
    shown = await change(await client.post(f"{listing}/{third.id}/deactivate",
                                           headers=plan.admin.auth))
    assert '"state":"deactivated"' in shown
    shown = await change(await client.post(f"{listing}/{third.id}/reactivate",
                                           headers=plan.admin.auth))
    assert '"state":"deactivated"' not in shown
    # The worker deactivates a judged integration, not kept, at its date: announced too.
    from app.worker.deactivations import deactivate_due

    other = await register_custom(client, plan)
    soon = (clock.now() + timedelta(days=1)).isoformat()
    await change(await client.put(f"/v1/integrations/{other.id}/judgement", headers=operator,
                                  json={"deactivate_at": soon, "review_deadline": soon}))
    clock.advance(days=2)
    await deactivate_due(make_sessionmaker(app.state.engine), clock.now(), batch_size=100)
    states = {i["client_id"]: i["state"] for i in json.loads(await same())}
    assert states[other.client_id] == "deactivated" and states[custom.client_id] == "active"


async def test_rows_drawn_apart_are_put_into_their_page_as_drawn(
        app, client, uncached, plan: PlanFixture) -> None:  # noqa: ANN001
    """A page's rows are kept as bytes and put into the page where their slot is
    (`web.Fragment`): a name that spells a slot, or closes a comment, or is not ASCII, is shown
    as written, escaped, as often as a plain name is, in both pages that draw their rows
    apart; and each page is the one an application with no cache gives."""
    serve_cache(app)
    hostile = [f"{web._SLOT}rows_html-->", "--><script>x()</script>", "Clé “née” — ✓",
               "plain-name-x"]
    for name in hostile:
        made = await client.post("/v1/me/tokens", json={"name": name},
                                 auth=(plan.admin.email, plan.admin.password))
        assert made.status_code == 201, made.text
    await sign_in(client, plan.admin)
    uncached.cookies = client.cookies
    for path in ("/console/admin/tokens", "/console/me/api-access"):
        for _ in range(2):  # drawn, then kept
            page = await client.get(path)
            assert page.status_code == 200, page.text
            assert page.text == (await uncached.get(path)).text, path
            assert web._SLOT not in page.text
            assert "<script>x()" not in page.text
            shown = page.text.count("plain-name-x")
            assert shown >= 1
            assert page.text.count(f"&lt;!--tessera-fragment-{web._SLOT[21:]}rows_html--&gt;") \
                == shown
            assert page.text.count("--&gt;&lt;script&gt;x()&lt;/script&gt;") == shown
            assert page.text.count("Clé “née” — ✓") == shown
            assert page.headers["content-type"] == "text/html; charset=utf-8"


async def test_a_page_kept_whole_is_each_viewers_own(
        app, client, uncached, plan: PlanFixture) -> None:  # noqa: ANN001
    """The Tokens page is kept whole (`web.render_kept`) per viewer, session, language, time
    zone and URL: another admin, another session of the same admin, French, a time zone, a
    message in the URL, each gets the page an application with no cache draws for it, and a
    page kept is answered again as it was. What it holds is weighed whole: its bytes, the rows
    it holds and its key's text (a URL of 60 kB)."""
    serve_cache(app)
    cache = app.state.token_cache
    other = await plan.add_user("admin")
    pages = ["/console/admin/tokens", "/console/me/api-access",
             "/console/me/api-access?done=revoked", "/console/admin/tokens?kind=personal"]

    async def same(**headers: str) -> list[str]:
        uncached.cookies = client.cookies
        seen = []
        for path in pages:
            kept = await client.get(path, headers=headers)
            again = await client.get(path, headers=headers)
            read = await uncached.get(path, headers=headers)
            assert kept.status_code == again.status_code == read.status_code == 200, path
            assert kept.text == again.text == read.text, path
            seen.append(kept.text)
        return seen

    # Every session made first: a sign-in writes an audit event, which drops the plan's pages.
    sessions = []
    for who in (plan.admin, plan.admin, other):
        client.cookies.clear()
        sessions.append((await sign_in(client, who), httpx2.Cookies(client.cookies)))
    (first, mine_cookies), (second, again_cookies), (_, their_cookies) = sessions
    assert second != first

    client.cookies = mine_cookies
    mine = await same()
    assert any(key[0] == "drawn" for key in cache._listings)
    assert all(first in page and plan.admin.email in page for page in mine)
    assert mine[2] != mine[1]  # the message the URL names is shown
    client.cookies = again_cookies  # the same admin, another session: another CSRF token
    assert all(second in page and first not in page for page in await same())
    client.cookies = their_cookies
    assert all(other.email in page and plan.admin.email not in page.split("<main")[0]
               for page in await same())
    client.cookies = httpx2.Cookies(mine_cookies)
    french = await same(**{"accept-language": "fr"})
    assert french[0] != mine[0] and 'lang="fr"' in french[0]
    client.cookies.set(i18n.TZ_COOKIE, "Pacific/Auckland")
    zoned = await same()
    assert zoned[0] != mine[0] and "Pacific/Auckland" in zoned[0]
    client.cookies = mine_cookies
    assert await same() == mine  # kept all along, as drawn
    long = "/console/admin/tokens?done=" + "A" * 60_000
    assert (await client.get(long)).status_code == 200
    entry = next(entry for key, entry in cache._listings.items()
                 if key[0] == "drawn" and len(key[7]) > 60_000)
    assert entry.weight > 2 * 60_000  # the query in its key, and again in its page's links
    client.cookies.clear()  # signed out: the sign-in page, never a kept one
    out = await client.get(pages[0])
    assert out.status_code == 303 and "/console/login" in out.headers["location"]


async def test_kept_integrations_and_security_pages_turn_when_time_or_policy_does(
        app, client, uncached, operator, plan: PlanFixture, clock) -> None:  # noqa: ANN001
    """The Integrations page is kept whole until the first review deadline or exception date
    of what it lists (`lifecycle.views_settled_until`): at the microsecond before, the page
    kept; at the deadline, the refusal, as an application with no cache draws it. The Security
    page turns with the policy."""
    from tests.integrations.test_review_api import install
    from tests.oauth2.conftest import register_third_party

    tp = await register_third_party(client, operator)  # not reviewed: a deadline in 30 days
    await install(app, plan, tp)
    deadline = (await client.get(f"/v1/integrations/{tp.id}", headers=operator)) \
        .json()["review_deadline"]
    serve_cache(app)
    await sign_in(client, plan.admin)
    uncached.cookies = client.cookies
    integrations, security = "/console/admin/integrations", "/console/admin/security/api-tokens"

    async def page(path: str) -> str:
        kept, read = await client.get(path), await uncached.get(path)
        assert kept.status_code == read.status_code == 200, kept.text
        assert kept.text == read.text, path
        return kept.text

    before = await page(integrations)
    assert await page(integrations) == before
    assert any(key[0] == "drawn" and key[1] == "admin_integrations.html"
               for key in cache_keys(app))
    at = datetime.fromisoformat(deadline)
    clock.set(at - timedelta(microseconds=1))
    assert await page(integrations) == before
    clock.set(at)
    after = await page(integrations)
    assert after != before
    clock.advance(days=1)
    assert await page(integrations) == after

    shown = await page(security)
    assert await page(security) == shown
    await plan.admin.renew(client)  # the admin's token of 30 days ago, made now
    admin = plan.admin.auth
    r = await client.put(f"/v1/plans/{plan.plan_id}/token-expiration",
                         json={"value": 400, "unit": "days"}, headers=admin)
    assert r.status_code == 200, r.text
    changed = await page(security)
    assert changed != shown and "400" in changed


def cache_keys(app) -> list[tuple]:  # noqa: ANN001
    return list(app.state.token_cache._listings)
