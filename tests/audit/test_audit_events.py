"""The audit trail records who obtained which credential and how, and who tried to sign in,
read back as a plan admin reads it (`GET /v1/plans/{p}/audit`, newest first, paged by cursor):

- `token.created` for every personal token (HTTP Basic: `via: "password"`, with the
  `user.signed_in` of that password; a personal token: `via: "personal"`) and every integration
  token an admin generates (`kind: "integration"`);
- `token.issued` for every grant at `/oauth2/token` (RFC 6749 §4.1.3, §4.4, §6), also when the
  request is answered in front of the application and its rows are group-committed
  (app/oauth2/fast_path.py, app/tokens/batches.py);
- `user.signed_in` and `user.sign_in_failed` (consent screen and HTTP Basic), never with what
  was typed; a wrong password for an email that does not exist records nothing and is answered
  exactly as a wrong password is (no account enumeration);
- `integration.installed` with the scopes the installing admin approved (rule 11).
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import timedelta
from typing import Any

import httpx2
import pytest
from sqlalchemy import func, select

from app.audit.models import AuditEvent
from app.db import make_sessionmaker
from tests.conftest import PlanFixture
from tests.helpers import answer
from tests.integrations.test_token_client_cache import serve_cache
from tests.oauth2 import test_fast_path
from tests.oauth2.browser import Browser, redirect_params
from tests.oauth2.conftest import REDIRECT, register_custom, register_third_party
from tests.oauth2.test_security import authorize_url, get_code, pkce, token

pytestmark = pytest.mark.asyncio

served = test_fast_path.served  # the fixture: a client through FastForms, as `tessera serve`


async def audit_events(client: httpx2.AsyncClient, plan: PlanFixture, action: str | None = None,
                       *, page: int = 5) -> list[dict[str, Any]]:
    """The plan's audit trail as its admin reads it, newest first: every page, each asked for
    with the cursor of the one before; only `action`'s events when given."""
    events: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": page}
    while True:
        r = await client.get(f"/v1/plans/{plan.plan_id}/audit", params=params,
                             headers=plan.admin.auth)
        assert r.status_code == 200, r.text
        events += r.json()["items"]
        if r.json()["next_cursor"] is None:
            break
        params["cursor"] = r.json()["next_cursor"]
    assert len({e["id"] for e in events}) == len(events)  # no page repeats another
    return [e for e in events if action is None or e["action"] == action]


async def token_id(client: httpx2.AsyncClient, plan: PlanFixture, secret: str) -> str:
    """The id of one of the plan's tokens, found by its hint in the admin's listing."""
    kind = {"tsa": "access", "tsr": "refresh", "tsp": "personal", "tsi": "integration"}
    r = await client.get(f"/v1/plans/{plan.plan_id}/tokens",
                         params={"kind": kind[secret[:3]], "limit": 500}, headers=plan.admin.auth)
    assert r.status_code == 200, r.text
    [found] = [t["id"] for t in r.json()["items"] if t["hint"] == secret[-4:]]
    return found


async def all_audit_rows(database) -> list[AuditEvent]:  # noqa: ANN001
    """Every audit event of every plan, and the platform's (the database's own view)."""
    async with make_sessionmaker(database.engine)() as session:
        return list((await session.execute(select(AuditEvent))).scalars())


async def count_audit_rows(database) -> int:  # noqa: ANN001
    async with make_sessionmaker(database.engine)() as session:
        return (await session.execute(select(func.count()).select_from(AuditEvent))).scalar_one()


def mentions(event: AuditEvent | dict[str, Any], text: str) -> bool:
    """Whether `text` appears anywhere in an event, its detail included, as JSON."""
    if isinstance(event, AuditEvent):
        event = {"actor": event.actor, "action": event.action, "target_type": event.target_type,
                 "target_id": event.target_id, "detail": event.detail}
    return text in json.dumps(event, default=str)


def page_of(response: httpx2.Response, email: str) -> str:
    """A login page without what differs between two browsers: the email typed, the CSRF
    token."""
    return re.sub(r'name="csrf_token" value="[^"]*"', 'name="csrf_token" value=""',
                  response.text.replace(email, "EMAIL"))


async def test_token_created_for_personal_and_integration_tokens(client, plan, clock) -> None:
    member = await plan.add_user()
    first = await member.renew(client)  # HTTP Basic email:password
    clock.advance(minutes=1)
    r = await client.post("/v1/me/tokens", json={"name": "by token"}, headers=member.auth)
    assert r.status_code == 201, r.text
    second = r.json()
    clock.advance(minutes=1)
    custom = await register_custom(client, plan)
    r = await client.post(f"/v1/plans/{plan.plan_id}/integrations/{custom.id}/tokens",
                          json={"scopes": ["data:read"]}, headers=plan.admin.auth)
    assert r.status_code == 201, r.text
    generated = r.json()

    created = await audit_events(client, plan, "token.created")
    # Newest first: the integration token, the personal token made with a personal token, the
    # one made with the password.
    assert [e["target_id"] for e in created[:3]] == \
        [generated["id"], second["id"], await token_id(client, plan, first)]
    by_admin, by_token, by_password = created[:3]
    assert by_admin["actor"] == f"user:{plan.admin.user_id}"
    assert by_admin["detail"] == {"kind": "integration", "integration_id": custom.id,
                                  "scopes": "data:read", "via": "personal"}
    assert by_token["actor"] == by_password["actor"] == f"user:{member.user_id}"
    assert by_token["detail"] == {"kind": "personal", "name": "by token", "via": "personal"}
    assert by_password["detail"] == {"kind": "personal", "name": "renewed", "via": "password"}

    # The password that made the first token is a sign-in, recorded with it; the personal
    # token that made the second one is not.
    signed_in = [e for e in await audit_events(client, plan, "user.signed_in")
                 if e["target_id"] == str(member.user_id)]
    assert [(e["actor"], e["detail"], e["occurred_at"]) for e in signed_in] == \
        [(f"user:{member.user_id}", {"via": "basic"}, by_password["occurred_at"])]


@pytest.mark.parametrize("path", ["application", "fast path", "fast path, cached"])
async def test_token_issued_for_every_grant(app, client, served, browser, plan, clock,
                                            path) -> None:
    if path.endswith("cached"):
        serve_cache(app)  # PostgreSQL: client and plan facts cached, issuance group-committed
    via = client if path == "application" else served
    custom = await register_custom(client, plan)
    cc = []
    for _ in range(2):  # the second one's facts come from the cache, when it serves
        clock.advance(minutes=1)
        cc.append(await token(via, custom, grant_type="client_credentials", scope="data:read"))
    clock.advance(minutes=1)
    verifier, challenge = pkce()
    code = await get_code(browser, plan, custom, challenge)
    ac = await token(via, custom, grant_type="authorization_code", code=code,
                     redirect_uri=REDIRECT, code_verifier=verifier)
    assert ac.status_code == 200, ac.text
    clock.advance(minutes=1)
    rt = await token(via, custom, grant_type="refresh_token",
                     refresh_token=ac.json()["refresh_token"], scope="profile")
    assert all(r.status_code == 200 for r in (*cc, rt)), [r.text for r in (*cc, rt)]

    issued = await audit_events(client, plan, "token.issued")
    assert [e["target_id"] for e in issued] == \
        [await token_id(client, plan, r.json()["access_token"]) for r in (rt, ac, *cc[::-1])]
    assert {e["actor"] for e in issued} == {f"integration:{custom.id}"}
    assert {e["detail"]["client_id"] for e in issued} == {custom.client_id}
    refreshed, redeemed, *credentials = issued
    for event in credentials:
        assert event["detail"] == {"grant": "client_credentials", "client_id": custom.client_id,
                                   "scopes": "data:read"}
    refresh_id = await token_id(client, plan, ac.json()["refresh_token"])
    assert redeemed["detail"] == {"grant": "authorization_code", "client_id": custom.client_id,
                                  "scopes": "profile", "user_id": str(plan.admin.user_id),
                                  "refresh_token_id": refresh_id}
    assert refreshed["detail"] == {
        "grant": "refresh_token", "client_id": custom.client_id, "scopes": "profile",
        "user_id": str(plan.admin.user_id), "rotated": refresh_id,
        "refresh_token_id": await token_id(client, plan, rt.json()["refresh_token"])}


async def test_sign_ins_and_failed_ones_never_record_the_password(client, browser, plan,
                                                                  database, clock) -> None:
    custom = await register_custom(client, plan)
    member = await plan.add_user()
    typed = f"wrong-{uuid.uuid4().hex}"
    _, challenge = pkce()
    page = await browser.http.get(authorize_url(custom.client_id, challenge))
    r = await browser.submit(page, email=member.email, password=typed)
    assert r.status_code == 401 and "Wrong email or password" in r.text
    clock.advance(minutes=1)
    r = await client.post("/v1/me/tokens", json={}, auth=(member.email, typed))
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    clock.advance(minutes=1)
    back = await browser.authorize(authorize_url(custom.client_id, challenge), member.email,
                                   member.password)
    assert "code" in redirect_params(back)

    actor = f"user:{member.user_id}"
    mine = [e for e in await audit_events(client, plan) if e["actor"] == actor
            and e["action"] in ("user.signed_in", "user.sign_in_failed")]
    assert [(e["action"], e["target_id"], e["detail"]) for e in mine] == [
        ("user.signed_in", str(member.user_id), {"via": "password",
                                                 "client_id": custom.client_id}),
        ("user.sign_in_failed", str(member.user_id), {"via": "basic"}),
        ("user.sign_in_failed", str(member.user_id), {"via": "password",
                                                      "client_id": custom.client_id}),
    ]
    # Neither what was typed nor the password itself is in any event, of any plan.
    for secret in (typed, member.password):
        assert not any(mentions(e, secret) for e in await audit_events(client, plan))
        assert not any(mentions(e, secret) for e in await all_audit_rows(database))


async def test_an_unknown_email_records_nothing_and_is_answered_as_a_wrong_password(
        app, client, plan, database) -> None:
    member = await plan.add_user()
    typed = f"wrong-{uuid.uuid4().hex}"
    unknown = f"nobody-{uuid.uuid4().hex[:10]}@example.com"

    before = await count_audit_rows(database)
    wrong = await client.post("/v1/me/tokens", json={}, auth=(member.email, typed))
    assert await count_audit_rows(database) == before + 1  # the account's failed sign-in
    nobody = await client.post("/v1/me/tokens", json={}, auth=(unknown, typed))
    assert await count_audit_rows(database) == before + 1  # nothing: there is no plan to tell
    assert wrong.status_code == 401 and answer(nobody) == answer(wrong)

    # The same on the consent screen.
    custom = await register_custom(client, plan)
    _, challenge = pkce()
    answers = []
    for email, recorded in ((member.email, 1), (unknown, 0)):
        browser = Browser(app)
        page = await browser.http.get(authorize_url(custom.client_id, challenge))
        before = await count_audit_rows(database)
        answers.append(await browser.submit(page, email=email, password=typed))
        assert await count_audit_rows(database) == before + recorded, email
        await browser.close()
    assert [(r.status_code, "Wrong email or password" in r.text) for r in answers] == \
        [(401, True), (401, True)]
    # The same page, but for the email typed back into it and each browser's own CSRF token.
    assert page_of(answers[1], unknown) == page_of(answers[0], member.email)
    failed = await audit_events(client, plan, "user.sign_in_failed")
    assert [e["actor"] for e in failed] == [f"user:{member.user_id}"] * 2


async def test_an_install_records_the_scopes_its_admin_approved(app, client, browser, plan,
                                                                operator, clock) -> None:
    tp = await register_third_party(client, operator)  # profile, data:read, data:write
    _, challenge = pkce()
    back = await browser.authorize(authorize_url(tp.client_id, challenge, scope="data:read"),
                                   plan.admin.email, plan.admin.password)
    assert "code" in redirect_params(back)
    clock.advance(minutes=1)
    back = await browser.authorize(authorize_url(tp.client_id, challenge,
                                                 scope="profile data:read"),
                                   plan.admin.email, plan.admin.password)
    assert "code" in redirect_params(back)

    [installed] = await audit_events(client, plan, "integration.installed")
    assert (installed["actor"], installed["target_type"], installed["target_id"]) == \
        (f"user:{plan.admin.user_id}", "integration", tp.id)
    assert installed["detail"] == {"name": "Acme Analytics", "approved_scopes": ["data:read"]}
    [widened] = await audit_events(client, plan, "installation.scopes_approved")
    assert widened["detail"] == {"previous": ["data:read"],
                                 "approved_scopes": ["profile", "data:read"]}
    # What was approved is what the integration gets for the plan on its own.
    r = await client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                          auth=(tp.client_id, tp.client_secret))
    assert r.status_code == 200 and r.json()["scope"] == "profile data:read"


@pytest.mark.parametrize("crafted", ["2026-01-01T00:00:00", "0001-01-01T00:00:00+14:00",
                                     "9999-12-31T23:30:00-01:00", "not a time", "\u00e9"])
async def test_a_crafted_cursor_is_a_422(client, plan, crafted) -> None:
    """A cursor this API never gave out (no time zone, an instant a UTC column cannot hold,
    garbage) is refused as such, never a 500."""
    cursor = base64.urlsafe_b64encode(f"{crafted}|{uuid.uuid4()}".encode()).decode()
    r = await client.get(f"/v1/plans/{plan.plan_id}/audit", params={"cursor": cursor},
                         headers=plan.admin.auth)
    assert r.status_code == 422 and r.json()["error"] == "invalid_cursor", r.text


async def test_pages_merge_the_plans_events_and_the_platforms_in_order(client, operator, plan,
                                                                       other_plan, database,
                                                                       clock) -> None:
    """A plan's trail holds its own events and the platform's decisions on integrations
    installed in it, read as two index walks and merged: paging through it, at any page size,
    gives every event once, newest first, ties broken by id; other plans' events never."""
    from app.integrations.models import Installation

    third = await register_third_party(client, operator)
    elsewhere = await register_third_party(client, operator)
    now = clock.now()
    rows = []
    for i in range(12):
        at = now.replace(microsecond=0) - timedelta(seconds=i // 3)
        rows.append(AuditEvent(id=uuid.uuid4(), occurred_at=at, actor="user:x", action="mine",
                               plan_id=plan.plan_id, target_type="plan",
                               target_id=str(plan.plan_id), detail={"i": i}))
        rows.append(AuditEvent(id=uuid.uuid4(), occurred_at=at, actor="operator:x",
                               action="integration.reviewed", plan_id=None,
                               target_type="integration", target_id=str(third.id),
                               detail={"i": i}))
        rows.append(AuditEvent(id=uuid.uuid4(), occurred_at=at, actor="operator:x",
                               action="integration.reviewed", plan_id=None,
                               target_type="integration", target_id=str(elsewhere.id),
                               detail={"i": i}))
        rows.append(AuditEvent(id=uuid.uuid4(), occurred_at=at, actor="user:y", action="theirs",
                               plan_id=other_plan.plan_id, target_type="plan",
                               target_id=str(other_plan.plan_id), detail={"i": i}))
    async with make_sessionmaker(database.engine)() as session:
        session.add(Installation(id=uuid.uuid4(), integration_id=uuid.UUID(str(third.id)),
                                 plan_id=plan.plan_id,
                                 state="active", installed_at=now, approved_scopes=[]))
        session.add_all(rows)
        await session.commit()
    url = f"/v1/plans/{plan.plan_id}/audit"
    everything = (await client.get(url, params={"limit": 200}, headers=plan.admin.auth)).json()
    assert everything["next_cursor"] is None
    listed = [(e["occurred_at"], e["id"]) for e in everything["items"]]
    assert listed == sorted(listed, reverse=True)
    ours = {str(r.id) for r in rows if r.plan_id == plan.plan_id or
            r.target_id == str(third.id)}
    assert ours <= {e["id"] for e in everything["items"]}
    assert not {str(r.id) for r in rows} - ours & {e["id"] for e in everything["items"]}
    for size in (1, 2, 5, 7):
        seen, cursor = [], None
        while True:
            params = {"limit": size} | ({"cursor": cursor} if cursor else {})
            page = (await client.get(url, params=params, headers=plan.admin.auth)).json()
            seen += [e["id"] for e in page["items"]]
            if (cursor := page["next_cursor"]) is None:
                break
        assert seen == [e["id"] for e in everything["items"]], size
