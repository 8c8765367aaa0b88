"""Reuse of a spent credential revokes its grant, also when the copies arrive at the same time
(RFC 9700 §4.14.2 for refresh tokens, RFC 6749 §4.1.2 and RFC 9700 §4.2.4 for codes).

A refresh token presented N times at once is exchanged once; every other presentation is an
`invalid_grant` and a reuse, which revokes the whole grant: the winner's new pair and the
original access token too. Checked through the application and in front of it, as `tessera
serve` answers token requests (app/oauth2/fast_path.py: rotation and revocation group-committed,
app/tokens/batches.py), with the token cache off and on (PostgreSQL; a no-op on SQLite). A code
redeemed N times at once is redeemed once, and what it issued is revoked. One after the other,
the same holds. Each reuse is in the plan's audit trail: `token.replayed` (by `system`) and
`authorization_code.replayed` (by the integration that presented the code).
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.audit.test_audit_events import audit_events
from tests.helpers import create_gateway_client, introspect
from tests.integrations.test_token_client_cache import serve_cache
from tests.oauth2 import test_fast_path
from tests.oauth2.conftest import REDIRECT
from tests.oauth2.test_security import get_code, pkce, token

pytestmark = pytest.mark.asyncio

served = test_fast_path.served  # the fixture: a client through FastForms, as `tessera serve`

N = 20


@pytest.fixture(params=["application", "fast path", "fast path, cached"])
def via(request, app, client, served):  # noqa: ANN001, ANN201
    """A client of the application itself, or of the application behind its fast paths,
    with the token cache serving (PostgreSQL only: it needs LISTEN/NOTIFY)."""
    if request.param == "application":
        return client
    if request.param.endswith("cached"):
        serve_cache(app)
    return served


async def redeemed(via, browser, plan, custom) -> dict[str, str]:  # noqa: ANN001
    """A grant: a code obtained by the plan's admin, redeemed once."""
    verifier, challenge = pkce()
    code = await get_code(browser, plan, custom, challenge)
    r = await token(via, custom, grant_type="authorization_code", code=code,
                    redirect_uri=REDIRECT, code_verifier=verifier)
    assert r.status_code == 200, r.text
    return r.json()


def refresh(via, custom, refresh_token: str):  # noqa: ANN001, ANN201
    return token(via, custom, grant_type="refresh_token", refresh_token=refresh_token)


async def issuance(client, plan, grant: str) -> list[dict]:  # noqa: ANN001
    """The plan's `token.issued` events of `grant`, newest first."""
    return [e for e in await audit_events(client, plan, "token.issued")
            if e["detail"]["grant"] == grant]


async def test_a_refresh_token_presented_at_once_n_times_revokes_its_grant(
        via, client, browser, plan, custom) -> None:
    gateway = await create_gateway_client(client, plan)
    first = await redeemed(via, browser, plan, custom)
    # Judged active (and cached, when the cache serves) before the reuse.
    assert (await introspect(via, gateway, first["access_token"]))["active"] is True

    answers = await asyncio.gather(*(refresh(via, custom, first["refresh_token"])
                                     for _ in range(N)))
    assert Counter(r.status_code for r in answers) == {200: 1, 400: N - 1}
    [winner] = [r.json() for r in answers if r.status_code == 200]
    assert {r.json()["error"] for r in answers if r.status_code == 400} == {"invalid_grant"}
    for secret in (winner["access_token"], winner["refresh_token"], first["access_token"],
                   first["refresh_token"]):
        assert await introspect(via, gateway, secret) == {"active": False}
    r = await refresh(via, custom, winner["refresh_token"])  # nothing of the grant is left
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"

    # One exchange was written; the reuse is audited, against the token presented.
    [redemption] = await issuance(client, plan, "authorization_code")
    spent = redemption["detail"]["refresh_token_id"]
    assert [e["detail"]["rotated"] for e in await issuance(client, plan, "refresh_token")] == \
        [spent]
    replayed = await audit_events(client, plan, "token.replayed")
    assert replayed and {(e["actor"], e["target_id"]) for e in replayed} == {("system", spent)}
    assert {e["detail"]["reason"] for e in replayed} == {"refresh token reuse detected"}


@pytest.mark.parametrize("path", ["application", "fast path"])
async def test_a_code_redeemed_at_once_n_times_revokes_what_it_issued(
        client, served, browser, plan, custom, path) -> None:
    via = client if path == "application" else served
    gateway = await create_gateway_client(client, plan)
    verifier, challenge = pkce()
    code = await get_code(browser, plan, custom, challenge)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": verifier}

    answers = await asyncio.gather(*(token(via, custom, **form) for _ in range(N)))
    assert Counter(r.status_code for r in answers) == {200: 1, 400: N - 1}
    [winner] = [r.json() for r in answers if r.status_code == 200]
    assert {r.json()["error"] for r in answers if r.status_code == 400} == {"invalid_grant"}
    for secret in (winner["access_token"], winner["refresh_token"]):
        assert await introspect(via, gateway, secret) == {"active": False}

    assert len(await issuance(client, plan, "authorization_code")) == 1
    replayed = await audit_events(client, plan, "authorization_code.replayed")
    assert len(replayed) == N - 1  # every loser's reuse, committed before its refusal
    assert {(e["actor"], e["target_type"]) for e in replayed} == \
        {(f"integration:{custom.id}", "authorization_code")}
    assert len({e["target_id"] for e in replayed}) == 1
    assert {e["detail"]["client_id"] for e in replayed} == {custom.client_id}
    assert max(e["detail"]["revoked_tokens"] for e in replayed) == 2  # the winner's pair


async def test_a_spent_refresh_token_presented_again_revokes_its_grant(
        via, client, browser, plan, custom, clock) -> None:
    gateway = await create_gateway_client(client, plan)
    first = await redeemed(via, browser, plan, custom)
    clock.advance(minutes=10)
    second = (await refresh(via, custom, first["refresh_token"])).json()
    clock.advance(minutes=10)
    r = await refresh(via, custom, second["refresh_token"])
    assert r.status_code == 200, r.text
    third = r.json()
    assert (await introspect(via, gateway, third["access_token"]))["active"] is True

    clock.advance(minutes=10)
    r = await refresh(via, custom, first["refresh_token"])  # spent two rotations ago
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    for secret in (third["access_token"], third["refresh_token"], second["access_token"],
                   first["access_token"]):
        assert await introspect(via, gateway, secret) == {"active": False}

    [redemption] = await issuance(client, plan, "authorization_code")
    [event] = await audit_events(client, plan, "token.replayed")
    assert (event["actor"], event["target_type"], event["target_id"]) == \
        ("system", "token", redemption["detail"]["refresh_token_id"])
    assert event["detail"]["kind"] == "refresh"
    assert event["detail"]["reason"] == "refresh token reuse detected"


@pytest.mark.parametrize("path", ["application", "fast path"])
async def test_a_code_presented_twice_revokes_what_it_issued(client, served, browser, plan,
                                                             custom, clock, path) -> None:
    via = client if path == "application" else served
    gateway = await create_gateway_client(client, plan)
    verifier, challenge = pkce()
    code = await get_code(browser, plan, custom, challenge)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": verifier}
    first = await token(via, custom, **form)
    assert first.status_code == 200, first.text
    clock.advance(seconds=5)
    again = await token(via, custom, **form)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    for secret in (first.json()["access_token"], first.json()["refresh_token"]):
        assert await introspect(via, gateway, secret) == {"active": False}

    [event] = await audit_events(client, plan, "authorization_code.replayed")
    assert (event["actor"], event["target_type"]) == \
        (f"integration:{custom.id}", "authorization_code")
    assert event["detail"] == {"client_id": custom.client_id, "revoked_tokens": 2}
