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
        r = await guesser.post(endpoint, data=form, auth=target)
        assert r.status_code == 429, r.text
        assert r.json()["error"] == "slow_down" and "error_description" in r.json()
        assert int(r.headers["retry-after"]) == int(limit.first_block.total_seconds())
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
