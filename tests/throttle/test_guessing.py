"""Guessing is slowed (rule 12), through the HTTP API, with the injected clock: passwords (HTTP
Basic, the consent screen's login) and client secrets (every client authentication) are counted
per account or client and per source address; past the limit the answer is 429 with
`Retry-After` (RFC 6749's shape on /oauth2/*), the right secret included, until the block ends.
Other accounts and other addresses keep working, and the block ends by itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
import pytest

from app.main import create_app
from app.throttle.hashing import PER_SOURCE
from app.throttle.policy import LIMITS, Guarded
from tests.helpers import create_gateway_client
from tests.oauth2.browser import Browser, form_of
from tests.oauth2.conftest import custom, register_custom  # noqa: F401 - a fixture
from tests.oauth2.test_security import authorize_url, pkce

pytestmark = pytest.mark.asyncio


@asynccontextmanager
async def from_address(app, address: str) -> AsyncIterator[httpx2.AsyncClient]:  # noqa: ANN001
    transport = httpx2.ASGITransport(app=app, client=(address, 40000))
    async with httpx2.AsyncClient(transport=transport, base_url="https://tessera.test") as c:
        yield c


async def test_password_guessing_on_one_account_is_blocked_then_forgiven(app, plan,
                                                                         clock) -> None:
    member = await plan.add_user()
    limit = LIMITS[Guarded.password_account]
    async with from_address(app, "198.51.100.1") as guesser:
        for _ in range(limit.failures):
            r = await guesser.post("/v1/me/tokens", json={}, auth=(member.email, "wrong-guess"))
            assert r.status_code == 401
        r = await guesser.post("/v1/me/tokens", json={}, auth=(member.email, member.password))
        assert r.status_code == 429 and r.json()["error"] == "too_many_attempts"
        wait = int(r.headers["retry-after"])
        assert wait == int(limit.first_block.total_seconds()) == r.json()["retry_after"]
    # From anywhere: the account is what is guessed. Its own personal tokens still work.
    async with from_address(app, "192.0.2.50") as owner:
        r = await owner.post("/v1/me/tokens", json={}, auth=(member.email, member.password))
        assert r.status_code == 429
        assert (await owner.get("/v1/me", headers=member.auth)).status_code == 200
        # Another account is not locked: no global lockout.
        r = await owner.post("/v1/me/tokens", json={},
                             auth=(plan.admin.email, plan.admin.password))
        assert r.status_code == 201
        clock.advance(seconds=wait)
        r = await owner.post("/v1/me/tokens", json={}, auth=(member.email, member.password))
        assert r.status_code == 201


async def test_one_address_guessing_many_accounts_is_blocked(app, plan, clock) -> None:
    users = [await plan.add_user() for _ in range(3)]
    limit = LIMITS[Guarded.password_source]
    async with from_address(app, "198.51.100.2") as guesser:
        for i in range(limit.failures):
            r = await guesser.post("/v1/me/tokens", json={},
                                   auth=(users[i % 3].email, f"guess-{i}"))
            assert r.status_code == 401, i
        r = await guesser.post("/v1/me/tokens", json={}, auth=(users[0].email, users[0].password))
        assert r.status_code == 429
    async with from_address(app, "192.0.2.51") as elsewhere:  # the users themselves
        r = await elsewhere.post("/v1/me/tokens", json={},
                                 auth=(users[0].email, users[0].password))
        assert r.status_code == 201


async def test_the_consent_screen_login_is_throttled_too(app, plan, custom,  # noqa: F811
                                                         clock) -> None:
    member = await plan.add_user()
    browser = Browser(app)
    try:
        _, challenge = pkce()
        url = authorize_url(custom.client_id, challenge)
        for _ in range(LIMITS[Guarded.password_account].failures):
            page = await browser.http.get(url)
            r = await browser.submit(page, email=member.email, password="wrong-guess")
            assert r.status_code == 401
        page = await browser.http.get(url)
        r = await browser.submit(page, email=member.email, password=member.password)
        assert r.status_code == 429 and "Too many failed sign-ins" in r.text
        assert r.headers["retry-after"] and "tessera_session" not in r.cookies
        assert form_of(r.text)["fields"]["email"] == member.email
    finally:
        await browser.close()


@pytest.mark.parametrize("endpoint", ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"])
async def test_client_secret_guessing_is_slowed_down(app, client, plan, clock,
                                                     endpoint) -> None:
    target = await create_gateway_client(client, plan)
    bystander = await register_custom(client, plan)
    form = {"grant_type": "client_credentials", "token": "tsa_x"}
    limit = LIMITS[Guarded.secret_client]
    async with from_address(app, f"198.51.100.{10 + len(endpoint)}") as guesser:
        for _ in range(limit.failures):
            r = await guesser.post(endpoint, data=form, auth=(target[0], "tss_wrong"))
            assert r.status_code == 401
        r = await guesser.post(endpoint, data=form, auth=(target[0], "tss_wrong-again"))
        assert r.status_code == 429, r.text
        assert r.json()["error"] == "slow_down" and "error_description" in r.json()
        assert int(r.headers["retry-after"]) == int(limit.first_block.total_seconds())
        # A client id's block never refuses its right secret: guessing at a client's id cannot
        # lock it out (this address is below its own limit still).
        r = await guesser.post(endpoint, data=form, auth=target)
        assert r.status_code in (200, 400) and r.status_code != 429, r.text
    async with from_address(app, "192.0.2.99") as elsewhere:
        r = await elsewhere.post(endpoint, data=form, auth=(target[0], "tss_wrong-elsewhere"))
        assert r.status_code == 429
        r = await elsewhere.post(endpoint, data=form, auth=target)
        assert r.status_code in (200, 400) and r.status_code != 429, r.text
    async with from_address(app, f"198.51.100.{10 + len(endpoint)}") as guesser:
        # Another client, from the same address, still authenticates: no global lockout.
        r = await guesser.post("/oauth2/token", data={"grant_type": "client_credentials"},
                               auth=(bystander.client_id, bystander.client_secret))
        assert r.status_code == 200
    clock.advance(seconds=limit.first_block.total_seconds())
    r = await client.post(endpoint, data=form, auth=target)
    assert r.status_code in (200, 400) and r.status_code != 429, r.text


async def test_a_block_is_seen_by_every_replica(database, settings, clock, plan) -> None:
    """Two applications (replicas) on one database: failures counted by one block the key on
    the other (PostgreSQL: a NOTIFY heard by each replica's listener, or the blocks in force
    read when it connects; SQLite: the keys' rows read at each check)."""
    a = create_app(settings, clock=clock, engine=database.engine)
    b = create_app(settings, clock=clock, engine=database.engine)
    member = await plan.add_user()
    async with a.router.lifespan_context(a), b.router.lifespan_context(b):
        async with from_address(a, "198.51.100.4") as on_a:
            for _ in range(LIMITS[Guarded.password_account].failures):
                r = await on_a.post("/v1/me/tokens", json={}, auth=(member.email, "wrong"))
                assert r.status_code == 401
        async with from_address(b, "192.0.2.52") as on_b:
            for _ in range(100):  # the NOTIFY's way to the other listener: milliseconds
                r = await on_b.post("/v1/me/tokens", json={},
                                    auth=(member.email, member.password))
                if r.status_code != 201:
                    break
                await asyncio.sleep(0.02)
            assert r.status_code == 429, r.text


async def test_every_spelling_of_a_login_counts_against_the_one_account(app, plan,
                                                                        clock) -> None:
    """`email`, `<plan id>/email`, the plan id in capitals or without dashes, the email in
    capitals: one account, one count, from as many addresses as the guesser has."""
    member = await plan.add_user()
    limit = LIMITS[Guarded.password_account]
    spellings = [member.email, f"{plan.plan_id}/{member.email}",
                 f"{str(plan.plan_id).upper()}/{member.email}",
                 f"{plan.plan_id.hex}/{member.email.upper()}", f" {member.email} "]
    for i in range(limit.failures):
        async with from_address(app, f"203.0.113.{i + 1}") as guesser:
            r = await guesser.post("/v1/me/tokens", json={},
                                   auth=(spellings[i % len(spellings)], "wrong-guess"))
            assert r.status_code == 401, (i, r.text)
    for login in spellings:
        async with from_address(app, "192.0.2.77") as owner:
            r = await owner.post("/v1/me/tokens", json={}, auth=(login, member.password))
            assert r.status_code == 429, login


async def test_an_ipv6_host_is_one_source_whatever_its_address(app, plan, clock) -> None:
    """An IPv6 host usually holds a whole /64: each of its addresses is the same source, and
    an IPv4 address mapped into IPv6 is the IPv4 address."""
    users = [await plan.add_user() for _ in range(3)]
    limit = LIMITS[Guarded.password_source]
    for i in range(limit.failures):
        async with from_address(app, f"2001:db8:1:2::{i + 1:x}") as guesser:
            r = await guesser.post("/v1/me/tokens", json={},
                                   auth=(users[i % 3].email, f"guess-{i}"))
            assert r.status_code == 401, i
    async with from_address(app, "2001:db8:1:2:ffff:ffff:ffff:fffe") as same_host:
        r = await same_host.post("/v1/me/tokens", json={},
                                 auth=(users[0].email, users[0].password))
        assert r.status_code == 429
    async with from_address(app, "2001:db8:1:3::1") as next_network:
        r = await next_network.post("/v1/me/tokens", json={},
                                    auth=(users[0].email, users[0].password))
        assert r.status_code == 201


async def test_a_burst_of_guesses_at_once_gets_no_more_checks_than_the_limit(
        app, plan, clock) -> None:
    """Fifty wrong passwords sent at once, from fifty addresses: those queued for a password
    check when the account gets blocked are refused at their turn, not checked. The count can
    overshoot by the checks already running at once (one hashing lane: none)."""
    member = await plan.add_user()
    limit = LIMITS[Guarded.password_account]

    async def guess(i: int) -> int:
        async with from_address(app, f"198.18.{i // 200}.{i % 200 + 1}") as guesser:
            r = await guesser.post("/v1/me/tokens", json={}, auth=(member.email, f"g{i}"))
            return r.status_code

    answers = await asyncio.gather(*(guess(i) for i in range(50)))
    checked = answers.count(401)
    assert set(answers) <= {401, 429, 503}, answers
    assert checked == limit.failures, answers
    async with from_address(app, "192.0.2.78") as owner:
        r = await owner.post("/v1/me/tokens", json={}, auth=(member.email, member.password))
        assert r.status_code == 429


async def test_one_address_cannot_crowd_the_password_queue(app, plan) -> None:
    """One source may have eight sign-ins waiting or running at once (offices share addresses);
    more from it at the same moment are answered 429 at once, so a burst from one address
    leaves most of the queue to others."""
    users = [await plan.add_user() for _ in range(16)]
    async with from_address(app, "198.51.100.66") as burst:
        answers = await asyncio.gather(*(
            burst.post("/v1/me/tokens", json={}, auth=(u.email, "wrong-guess")) for u in users))
    codes = [r.status_code for r in answers]
    assert codes.count(429) >= 1 and codes.count(401) >= PER_SOURCE, codes
    for r in answers:
        if r.status_code == 429:
            assert r.json()["error"] == "too_many_attempts" and "retry-after" in r.headers
            # Said as it is: none of these need have failed.
            assert r.json()["message"].startswith("too many sign-ins from this address at once")


async def test_an_address_guessing_client_secrets_is_refused_before_any_check(app, client, plan,
                                                                            clock) -> None:
    """Wrong secrets for many clients from one address block the address: from it, even a right
    secret is refused before it is checked (no oracle for the guesser), 429 slow_down; the
    clients themselves, from anywhere else, are not; the block ends by itself."""
    clients = [await register_custom(client, plan) for _ in range(4)]
    limit = LIMITS[Guarded.secret_source]
    form = {"grant_type": "client_credentials"}
    async with from_address(app, "203.0.113.200") as guesser:
        for i in range(limit.failures):
            victim = clients[i % 3]
            r = await guesser.post("/oauth2/token", data=form,
                                   auth=(victim.client_id, f"tss_wrong-{i}"))
            assert r.status_code in (401, 429), (i, r.text)
        fresh = clients[3]  # never used: its credentials are not known good anywhere
        r = await guesser.post("/oauth2/token", data=form,
                               auth=(fresh.client_id, fresh.client_secret))
        assert r.status_code == 429 and r.json()["error"] == "slow_down", r.text
        assert int(r.headers["retry-after"]) >= 1
    async with from_address(app, "192.0.2.98") as elsewhere:
        r = await elsewhere.post("/oauth2/token", data=form,
                                 auth=(fresh.client_id, fresh.client_secret))
        assert r.status_code == 200, r.text
    clock.advance(seconds=limit.longest_block.total_seconds())
    async with from_address(app, "203.0.113.200") as guesser:
        r = await guesser.post("/oauth2/token", data=form,
                               auth=(fresh.client_id, fresh.client_secret))
        assert r.status_code == 200, r.text
