"""The console over HTTP, as an attacker and as its users: who may open which page, forms
without their CSRF token or from another site, the actions' effects through the same services
as the API (checked through the API), languages and time zones."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import timedelta

import httpx2
import pytest
from sqlalchemy import func, select

from app.console import web
from app.db import make_sessionmaker, session_scope
from app.notifications.models import OutboxMessage
from tests.conftest import PlanFixture
from tests.console.conftest import csrf_of, sign_in

pytestmark = pytest.mark.asyncio

ADMIN_PAGES = ["/console/admin/security/api-tokens",
               "/console/admin/security/api-tokens?value=30&unit=days",
               "/console/admin/tokens", "/console/admin/integrations",
               "/console/admin/directory", "/console/admin/audit"]
USER_PAGES = ["/console/me/api-access", "/console/me/connected-apps"]
FORMS = ["/console/me/api-access/generate", "/console/admin/security/api-tokens/activate",
         "/console/admin/security/api-tokens/turn-off",
         "/console/admin/security/api-tokens/notify", "/console/logout", "/console/language"]


@pytest.fixture
async def browser_client(app):  # noqa: ANN001, ANN201
    """A second, cookie-keeping client: another person's browser."""
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app),
                                  base_url="https://tessera.test") as c:
        yield c


async def _tokens(client: httpx2.AsyncClient, auth: dict[str, str]) -> list[dict]:
    r = await client.get("/v1/me/tokens", headers=auth)
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def test_without_a_session_every_page_sends_to_sign_in_and_back(client) -> None:
    for path in USER_PAGES + ADMIN_PAGES:
        r = await client.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/console/login?next=/console/"), path
        assert r.headers["cache-control"] == "no-store"
    for path in FORMS[:4]:
        r = await client.post(path, data={"csrf_token": "x"})
        assert r.status_code in (303, 403), path
        assert r.status_code == 403 or r.headers["location"].startswith("/console/login")


async def test_sign_in_goes_back_only_to_a_console_page(client, plan: PlanFixture) -> None:
    page = await client.get("/console/login?next=/console/admin/tokens")
    assert 'value="/console/admin/tokens"' in page.text
    for hostile in ["https://evil.example/", "//evil.example/console/", "/\\evil.example",
                    "/v1/me", "/console/../v1", "/console/%2e%2e/v1", "/console//evil",
                    "javascript:alert(1)", "/console/\r\nX: y"]:
        client.cookies.clear()
        page = await client.get("/console/login", params={"next": hostile})
        r = await client.post("/console/login", data={
            "email": plan.admin.email, "password": plan.admin.password,
            "csrf_token": csrf_of(page.text), "next": hostile})
        assert r.status_code == 303
        location = r.headers["location"]
        assert location == "/console/me/api-access", hostile


async def test_wrong_password_and_cross_site_login_are_refused(client, plan: PlanFixture) -> None:
    page = await client.get("/console/login")
    token = csrf_of(page.text)
    r = await client.post("/console/login", data={
        "email": plan.admin.email, "password": "wrong password!", "csrf_token": token})
    assert r.status_code == 401 and "Wrong email or password." in r.text
    assert "tessera_session" not in r.cookies
    # Login CSRF: another site posting the form (with the victim's cookie) is refused.
    r = await client.post("/console/login", headers={"Origin": "https://evil.example"}, data={
        "email": plan.admin.email, "password": plan.admin.password, "csrf_token": token})
    assert r.status_code == 403 and "tessera_session" not in r.cookies
    r = await client.post("/console/login", data={
        "email": plan.admin.email, "password": plan.admin.password, "csrf_token": "forged"})
    assert r.status_code == 403 and "tessera_session" not in r.cookies


async def test_members_see_their_pages_and_are_refused_admin_pages(
        client, plan: PlanFixture) -> None:
    member = await plan.add_user("member")
    csrf = await sign_in(client, member)
    for path in USER_PAGES:
        r = await client.get(path)
        assert r.status_code == 200, path
        assert "Security &amp; Control" not in r.text  # no admin navigation
    for path in ADMIN_PAGES:
        r = await client.get(path)
        assert r.status_code == 403, path
        assert "only a system admin" in r.text
    before = (await client.get(f"/v1/plans/{plan.plan_id}/token-expiration",
                               headers=plan.admin.auth)).json()
    r = await client.post("/console/admin/security/api-tokens/activate",
                          data={"csrf_token": csrf, "value": "1", "unit": "minutes",
                                "confirm": "yes", "confirm_own": "yes", "seen": "0"})
    assert r.status_code == 403
    after = (await client.get(f"/v1/plans/{plan.plan_id}/token-expiration",
                              headers=plan.admin.auth)).json()
    assert after["period"] == before["period"] is None


async def test_forms_without_the_session_token_or_from_another_site_change_nothing(
        client, plan: PlanFixture) -> None:
    csrf = await sign_in(client, plan.admin)
    count = len(await _tokens(client, plan.admin.auth))
    for data, headers in [({}, {}), ({"csrf_token": "x" * 43}, {}),
                          ({"csrf_token": "é"}, {}),
                          ({"csrf_token": csrf}, {"Origin": "https://evil.example"}),
                          ({"csrf_token": csrf}, {"Sec-Fetch-Site": "cross-site"}),
                          ({"csrf_token": csrf}, {"Origin": "null"})]:
        r = await client.post("/console/me/api-access/generate", data={**data, "name": "x"},
                              headers=headers)
        assert r.status_code == 403, (data, headers)
        assert "tsp_" not in r.text
    assert len(await _tokens(client, plan.admin.auth)) == count


async def test_a_token_generated_is_shown_once_and_works_regenerate_and_revoke(
        client, plan: PlanFixture) -> None:
    member = await plan.add_user("member")
    csrf = await sign_in(client, member)
    r = await client.post("/console/me/api-access/generate",
                          data={"csrf_token": csrf, "name": "nightly <script>"})
    assert r.status_code == 201
    secret = re.search(r'id="secret" type="text" readonly value="([^"]+)"', r.text).group(1)
    assert "nightly &lt;script&gt;" in r.text and "<script>" not in r.text.split("</head>")[1]
    auth = {"Authorization": f"Bearer {secret}"}
    assert (await client.get("/v1/me", headers=auth)).status_code == 200
    # Never shown again.
    page = await client.get("/console/me/api-access")
    assert secret not in page.text and secret[-4:] in page.text
    new = next(t for t in await _tokens(client, auth) if t["name"] == "nightly <script>")
    r = await client.post(f"/console/me/api-access/{new['id']}/regenerate",
                          data={"csrf_token": csrf})
    assert r.status_code == 201
    second = re.search(r'id="secret" type="text" readonly value="([^"]+)"', r.text).group(1)
    assert second != secret and f"ending in {secret[-4:]}" in r.text
    assert (await client.get("/v1/me", headers=auth)).status_code == 401
    auth2 = {"Authorization": f"Bearer {second}"}
    items = await _tokens(client, auth2)
    assert [t["status"] for t in items if t["name"] == "nightly <script>"].count("active") == 1
    again = next(t for t in items if t["name"] == "nightly <script>" and t["status"] == "active")
    r = await client.post(f"/console/me/api-access/{again['id']}/revoke",
                          data={"csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"].endswith("done=revoked")
    assert (await client.get("/v1/me", headers=auth2)).status_code == 401


async def test_no_one_acts_on_another_persons_or_plans_tokens(
        client, browser_client, plan: PlanFixture, other_plan: PlanFixture) -> None:
    member = await plan.add_user("member")
    victim = (await _tokens(client, member.auth))[0]
    other_admin_csrf = await sign_in(browser_client, other_plan.admin)
    colleague_csrf = await sign_in(client, await plan.add_user("member"))
    for c, csrf, path in [
        (client, colleague_csrf, f"/console/me/api-access/{victim['id']}/revoke"),
        (client, colleague_csrf, f"/console/me/api-access/{victim['id']}/regenerate"),
        (browser_client, other_admin_csrf, f"/console/me/api-access/{victim['id']}/revoke"),
        (browser_client, other_admin_csrf, f"/console/admin/tokens/{victim['id']}/revoke"),
        (browser_client, other_admin_csrf, "/console/admin/tokens/not-a-uuid/revoke"),
        (browser_client, other_admin_csrf, "/console/me/api-access/%2e%2e/revoke"),
    ]:
        r = await c.post(path, data={"csrf_token": csrf})
        assert r.status_code == 404, path
    assert (await client.get("/v1/me", headers=member.auth)).status_code == 200
    # And the other plan's admin sees none of this plan's tokens in their list.
    page = await browser_client.get("/console/admin/tokens")
    assert victim["hint"] not in page.text and member.email not in page.text


async def test_the_period_is_activated_only_after_confirming_what_dies(
        client, plan: PlanFixture) -> None:
    member = await plan.add_user("member")
    plan.clock.advance(days=10)
    csrf = await sign_in(client, plan.admin)
    preview = await client.get("/console/admin/security/api-tokens",
                               params={"value": "5", "unit": "days"})
    assert preview.status_code == 200
    assert re.search(r'id="count-now">\s*2<', preview.text), preview.text  # both tokens, now
    assert member.email in preview.text and plan.admin.email in preview.text
    assert "your own tokens" in preview.text
    form = {"csrf_token": csrf, "value": "5", "unit": "days"}
    for missing in [{}, {"confirm": "yes", "seen": "2"}, {"confirm_own": "yes"},
                    {"confirm": "yes", "confirm_own": "yes", "seen": "1"}]:
        r = await client.post("/console/admin/security/api-tokens/activate",
                              data={**form, **missing})
        assert r.status_code == 409, missing
    assert (await client.get("/v1/me", headers=member.auth)).status_code == 200
    r = await client.post("/console/admin/security/api-tokens/activate",
                          data={**form, "confirm": "yes", "confirm_own": "yes", "seen": "2"})
    assert r.status_code == 303 and r.headers["location"].endswith("done=activated")
    assert (await client.get("/v1/me", headers=member.auth)).status_code == 401
    page = await client.get(r.headers["location"])
    assert "Tokens expire 5 days after they were generated." in page.text
    # The console's session is not a token: the admin still signs in and turns it off.
    r = await client.post("/console/admin/security/api-tokens/turn-off",
                          data={"csrf_token": csrf})
    assert r.status_code == 303
    # Rule 4: what expired stays expired.
    assert (await client.get("/v1/me", headers=member.auth)).status_code == 401


async def test_bad_periods_are_explained_not_failed(client, plan: PlanFixture) -> None:
    csrf = await sign_in(client, plan.admin)
    for value, unit in [("0", "days"), ("-1", "days"), ("abc", "days"), ("1", "weeks"),
                        ("99999999999999999999", "years"), ("", ""), ("1e3", "days")]:
        r = await client.get("/console/admin/security/api-tokens",
                             params={"value": value, "unit": unit})
        assert r.status_code == 422, (value, unit)
        assert 'role="alert"' in r.text
        r = await client.post("/console/admin/security/api-tokens/activate",
                              data={"csrf_token": csrf, "value": value, "unit": unit,
                                    "confirm": "yes", "confirm_own": "yes"})
        assert r.status_code == 422, (value, unit)


async def test_tell_the_affected_users_now_queues_each_notice_once(
        client, plan: PlanFixture, database) -> None:  # noqa: ANN001
    await plan.add_user("member")
    plan.clock.advance(days=27)
    csrf = await sign_in(client, plan.admin)
    r = await client.put(f"/v1/plans/{plan.plan_id}/token-expiration",
                         json={"value": 30, "unit": "days"}, headers=plan.admin.auth)
    assert r.status_code == 200

    async def queued() -> int:
        async with session_scope(make_sessionmaker(database.engine)) as s:
            return (await s.execute(select(func.count()).select_from(OutboxMessage).where(
                OutboxMessage.plan_id == plan.plan_id))).scalar_one()

    r = await client.post("/console/admin/security/api-tokens/notify", data={"csrf_token": csrf})
    assert r.status_code == 303 and "n=2" in r.headers["location"]
    assert await queued() == 2
    answers = await asyncio.gather(*(client.post(
        "/console/admin/security/api-tokens/notify", data={"csrf_token": csrf})
        for _ in range(5)))
    assert {a.status_code for a in answers} <= {303, 409, 503}
    assert await queued() == 2


async def test_plan_tokens_filters_and_explanations(client, plan: PlanFixture) -> None:
    member = await plan.add_user("member")
    await sign_in(client, plan.admin)
    r = await client.delete(f"/v1/me/tokens/{(await _tokens(client, member.auth))[0]['id']}",
                            headers=member.auth)
    assert r.status_code == 204
    page = await client.get("/console/admin/tokens", params={"status": "revoked"})
    assert page.status_code == 200 and member.email in page.text
    assert "revoked by its owner" in page.text and plan.admin.email not in page.text.split(
        "<tbody>")[1]
    page = await client.get("/console/admin/tokens", params={"user": str(plan.admin.user_id),
                                                            "status": "active"})
    assert member.email not in page.text.split("<tbody>")[1]
    for hostile in [{"within": "x"}, {"offset": "-5"}, {"kind": "<b>"}, {"user": "zz"},
                    {"status": "' OR 1=1"}, {"offset": "99999999999"}]:
        r = await client.get("/console/admin/tokens", params=hostile)
        assert r.status_code in (200, 422), hostile
        assert "<b>" not in r.text.split("</head>")[1]


async def test_audit_log_pages_and_refuses_crafted_cursors(client, plan: PlanFixture) -> None:
    await sign_in(client, plan.admin)
    for _ in range(3):
        await client.post("/v1/me/tokens", json={"name": "a"}, headers=plan.admin.auth)
    page = await client.get("/console/admin/audit")
    assert page.status_code == 200 and "token.created" in page.text
    assert "user.signed_in" in page.text
    page = await client.get("/console/admin/audit", params={"action": "token."})
    assert page.text.count("token.created") == 3 and "user.signed_in" not in page.text
    page = await client.get("/console/admin/audit", params={"action": "%"})
    assert page.status_code == 200 and "token.created" not in page.text  # a literal %
    for cursor in ["garbage", "x" * 300, "MjAyNi0wMS0xNVQxMjowMDowMHw="]:
        r = await client.get("/console/admin/audit", params={"cursor": cursor})
        assert r.status_code == 422, cursor


async def test_pages_speak_french_when_asked_and_show_the_viewers_time_zone(
        client, plan: PlanFixture) -> None:
    csrf = await sign_in(client, plan.admin)
    r = await client.get("/console/me/api-access", headers={"Accept-Language": "fr-CA,fr;q=0.9"})
    assert '<html lang="fr">' in r.text and "Vos jetons" in r.text
    r = await client.get("/console/me/api-access", headers={"Accept-Language": "de, en;q=0.5"})
    assert '<html lang="en">' in r.text and "Your tokens" in r.text
    r = await client.post("/console/language", data={"csrf_token": csrf, "language": "fr",
                                                     "next": "/console/admin/tokens"})
    assert r.status_code == 303 and r.headers["location"] == "/console/admin/tokens"
    r = await client.get("/console/me/api-access", headers={"Accept-Language": "en"})
    assert "Vos jetons" in r.text  # the choice outranks the browser's
    client.cookies.set("tessera_tz", "Europe%2FParis", domain="tessera.test")
    r = await client.get("/console/me/api-access")
    assert "Europe/Paris" in r.text and "13:00" in r.text  # T0 is 12:00 UTC, in winter
    client.cookies.set("tessera_tz", "Not/AZone", domain="tessera.test")
    r = await client.get("/console/me/api-access")
    assert r.status_code == 200 and "UTC" in r.text


async def test_console_pages_forbid_framing_scripts_from_elsewhere_and_caching(
        client, plan: PlanFixture) -> None:
    await sign_in(client, plan.admin)
    for path in USER_PAGES + ADMIN_PAGES + ["/console/login", "/console/nope"]:
        r = await client.get(path)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert r.headers["cache-control"] == "no-store" and r.headers["x-frame-options"] == "DENY"
    r = await client.get("/console/static/console.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert (await client.get("/console/static/..%2Fweb.py")).status_code == 404


async def _operator_sign_in(client: httpx2.AsyncClient, operator: dict[str, str]) -> str:
    page = await client.get("/console/operator/login")
    token = operator["Authorization"].removeprefix("Bearer ")
    r = await client.post("/console/operator/login",
                          data={"token": token, "csrf_token": csrf_of(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/console/operator"
    queue = await client.get("/console/operator")
    assert queue.status_code == 200 and token not in queue.text
    return csrf_of(queue.text)


async def test_the_operator_console_needs_an_operator(client, browser_client, operator,
                                                      plan: PlanFixture) -> None:
    for path in ["/console/operator", "/console/operator/requests"]:
        r = await client.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith(
            "/console/operator/login?next=")
    # A signed-in user, even an admin, is no operator.
    await sign_in(client, plan.admin)
    assert (await client.get("/console/operator")).status_code == 303
    page = await client.get("/console/operator/login")
    for token in [plan.admin.token, "tso_" + "x" * 40, "", "é" * 10]:
        r = await client.post("/console/operator/login",
                              data={"token": token, "csrf_token": csrf_of(page.text)})
        assert r.status_code in (401, 403) and "tessera_operator" not in r.cookies
    csrf = await _operator_sign_in(browser_client, operator)
    # Its forms need its own token: a user's session token is not it.
    from tests.oauth2.conftest import register_third_party

    tp = await register_third_party(client, operator)
    user_csrf = csrf_of((await client.get("/console/me/api-access")).text)
    r = await browser_client.post(f"/console/operator/integrations/{tp.id}/review",
                                  data={"csrf_token": user_csrf, "status": "revoked"})
    assert r.status_code == 403
    r = await browser_client.post(f"/console/operator/integrations/{tp.id}/review",
                                  headers={"Origin": "https://evil.example"},
                                  data={"csrf_token": csrf, "status": "revoked"})
    assert r.status_code == 403
    review = (await client.get(f"/v1/integrations/{tp.id}", headers=operator)).json()
    assert review["review_status"] == "not_reviewed"


async def test_an_operator_approves_a_review_in_the_console(client, browser_client, operator,
                                                            plan: PlanFixture) -> None:
    from tests.oauth2.conftest import register_third_party

    tp = await register_third_party(client, operator)
    csrf = await _operator_sign_in(browser_client, operator)
    queue = await browser_client.get("/console/operator")
    assert "Acme Analytics" in queue.text and "business_verification" in queue.text
    # Approval without the steps is refused, and says why.
    r = await browser_client.post(f"/console/operator/integrations/{tp.id}/review",
                                  data={"csrf_token": csrf, "status": "approved"})
    assert r.status_code == 422 and "review step" in r.text
    r = await browser_client.post(f"/console/operator/integrations/{tp.id}/review", data={
        "csrf_token": csrf, "status": "approved", "step_business_verification": "yes",
        "step_terms_accepted": "yes", "step_review": "yes", "deadline": "2026-03-01T10:00"})
    assert r.status_code == 303
    review = (await client.get(f"/v1/integrations/{tp.id}", headers=operator)).json()
    assert review["review_status"] == "approved"
    assert review["review_deadline"].startswith("2026-03-01T10:00:00")
    r = await browser_client.post(f"/console/operator/integrations/{tp.id}/dpop",
                                  data={"csrf_token": csrf, "bound": "yes"})
    assert r.status_code == 303
    assert (await client.get(f"/v1/integrations/{tp.id}", headers=operator)
            ).json()["dpop_bound_access_tokens"] is True
    for bad in ["yesterday", "0001-01-01", "9999-12-31T00:00"]:
        r = await browser_client.post(f"/console/operator/integrations/{tp.id}/review",
                                      data={"csrf_token": csrf, "deadline": bad})
        assert r.status_code == 422, bad


async def test_an_admin_installs_from_the_directory_and_asks_for_an_exception(
        client, operator, plan: PlanFixture, other_plan: PlanFixture, browser_client) -> None:
    from tests.oauth2.conftest import register_custom, register_third_party

    steps = {"business_verification": True, "terms_accepted": True, "review": True}
    approved = await register_third_party(client, operator)
    await client.put(f"/v1/integrations/{approved.id}/review", headers=operator,
                     json={"status": "approved", "steps": steps})
    pending = await register_third_party(client, operator, name="Not Yet")
    csrf = await sign_in(client, plan.admin)
    page = await client.get("/console/admin/directory", params={"q": "acme"})
    assert "Acme Analytics" in page.text and "Not Yet" not in page.text
    assert (await client.get("/console/admin/directory", params={"q": "%_"})).status_code == 200
    # Not approved, or not a third-party app: not in the directory, not installable.
    for ident in [pending.id, uuid.uuid4(), "x"]:
        r = await client.post(f"/console/admin/directory/{ident}/install",
                              data={"csrf_token": csrf, "decision": "allow"})
        assert r.status_code == 404
    consent = await client.get(f"/console/admin/directory/{approved.id}/install")
    assert "data:write" in consent.text
    answers = await asyncio.gather(*(client.post(
        f"/console/admin/directory/{approved.id}/install",
        data={"csrf_token": csrf, "decision": "allow"}) for _ in range(5)))
    assert {a.status_code for a in answers} <= {303, 409}
    views = (await client.get(f"/v1/plans/{plan.plan_id}/integrations",
                              headers=plan.admin.auth)).json()
    [view] = [v for v in views if v["integration_id"] == str(approved.id)]
    assert view["approved_scopes"] == ["profile", "data:read", "data:write"]
    # Installed in this plan only.
    assert (await client.get(f"/v1/plans/{other_plan.plan_id}/integrations",
                             headers=other_plan.admin.auth)).json() == []

    custom = await register_custom(client, plan)
    await client.put(f"/v1/integrations/{custom.id}/judgement", headers=operator,
                     json={"deactivate_at": "2026-03-01T00:00:00Z"})
    page = await client.get("/console/admin/integrations")
    assert "Needs attention" in page.text and "Request exception" in page.text
    r = await client.post(f"/console/admin/integrations/{custom.id}/request_exception",
                          data={"csrf_token": csrf, "message": ""})
    assert r.status_code == 422
    r = await client.post(f"/console/admin/integrations/{custom.id}/request_exception",
                          data={"csrf_token": csrf, "message": "Payroll"})
    assert r.status_code == 303
    queue = (await client.get("/v1/exception-requests", headers=operator)).json()
    assert [q["message"] for q in queue if q["integration_id"] == str(custom.id)] == ["Payroll"]
    # Another plan's admin can act on none of it.
    other_csrf = await sign_in(browser_client, other_plan.admin)
    for action in ["deactivate", "reactivate", "request_exception", "confirm_keep", "nope"]:
        r = await browser_client.post(f"/console/admin/integrations/{custom.id}/{action}",
                                      data={"csrf_token": other_csrf, "message": "x"})
        assert r.status_code == 404, action


async def test_connected_apps_list_and_disconnect_in_the_api(client, plan: PlanFixture) -> None:
    from app.db import make_sessionmaker as maker_of
    from app.tokens import service as tokens
    from app.tokens.rules import TokenKind
    from tests.oauth2.conftest import register_custom

    custom = await register_custom(client, plan)
    member = await plan.add_user("member")
    family = uuid.uuid4()
    async with session_scope(maker_of(plan.db.engine)) as s:
        _t, access = tokens.issue(s, kind=TokenKind.access, plan_id=plan.plan_id,
                                  user_id=member.user_id, integration_id=uuid.UUID(custom.id),
                                  scopes="profile tokens:read", now=plan.clock.now(),
                                  family_id=family, expires_at=plan.clock.now() + timedelta(
                                      hours=1))
        _t, _refresh = tokens.issue(s, kind=TokenKind.refresh, plan_id=plan.plan_id,
                                    user_id=member.user_id, integration_id=uuid.UUID(custom.id),
                                    scopes="profile tokens:read", now=plan.clock.now(),
                                    family_id=family)
    r = await client.get("/v1/me/grants", headers=member.auth)
    assert r.status_code == 200
    [grant] = r.json()["items"]
    assert grant["name"] == "In-house app" and grant["scopes"] == ["profile", "tokens:read"]
    assert grant["grants"] == 1
    # Nobody else sees it; the app's own token may list (tokens:read) but not disconnect.
    assert (await client.get("/v1/me/grants", headers=plan.admin.auth)).json()["items"] == []
    oauth = {"Authorization": f"Bearer {access}"}
    assert (await client.get("/v1/me/grants", headers=oauth)).status_code == 200
    r = await client.delete(f"/v1/me/grants/{custom.id}", headers=oauth)
    assert r.status_code == 403
    r = await client.delete(f"/v1/me/grants/{custom.id}", headers=plan.admin.auth)
    assert r.status_code == 404
    r = await client.delete(f"/v1/me/grants/{custom.id}", headers=member.auth)
    assert r.status_code == 204
    assert (await client.get("/v1/me", headers=oauth)).status_code == 401
    assert (await client.get("/v1/me/grants", headers=member.auth)).json()["items"] == []
    assert (await client.delete(f"/v1/me/grants/{custom.id}",
                                headers=member.auth)).status_code == 404


async def test_the_admin_requires_dpop_from_the_security_page(client, plan: PlanFixture) -> None:
    csrf = await sign_in(client, plan.admin)
    page = await client.get("/console/admin/security/api-tokens")
    assert "Require DPoP for custom integrations" in page.text
    r = await client.post("/console/admin/security/api-tokens/dpop",
                          data={"csrf_token": csrf, "required": "yes"})
    assert r.status_code == 303
    policy = await client.get(f"/v1/plans/{plan.plan_id}/dpop", headers=plan.admin.auth)
    assert policy.json() == {"required_for_custom_integrations": True}
    assert 'name="required" value="yes" checked' in (
        await client.get("/console/admin/security/api-tokens")).text
    r = await client.post("/console/admin/security/api-tokens/dpop", data={"csrf_token": csrf})
    assert r.status_code == 303
    policy = await client.get(f"/v1/plans/{plan.plan_id}/dpop", headers=plan.admin.auth)
    assert policy.json() == {"required_for_custom_integrations": False}
    r = await client.post("/console/admin/security/api-tokens/dpop",
                          data={"required": "yes"})  # no CSRF token
    assert r.status_code == 403


async def test_a_token_regenerated_twenty_times_at_once_has_one_successor(
        client, plan: PlanFixture) -> None:
    member = await plan.add_user("member")
    csrf = await sign_in(client, member)
    old = (await _tokens(client, member.auth))[0]
    answers = await asyncio.gather(*(client.post(
        f"/console/me/api-access/{old['id']}/regenerate", data={"csrf_token": csrf})
        for _ in range(20)))
    codes = [a.status_code for a in answers]
    # One successor; the others find the token revoked (409), or, on a busy database, were
    # told to retry before anything was done (503).
    assert codes.count(201) == 1 and set(codes) <= {201, 409, 503}, codes
    [winner] = [a for a in answers if a.status_code == 201]
    secret = re.search(r'id="secret" type="text" readonly value="([^"]+)"', winner.text).group(1)
    live = [t for t in await _tokens(client, {"Authorization": f"Bearer {secret}"})
            if t["status"] == "active"]
    assert len(live) == 1 and live[0]["hint"] == secret[-4:]


async def test_the_console_takes_token_names_as_the_api_does(client, plan: PlanFixture) -> None:
    csrf = await sign_in(client, plan.admin)
    for name in ["a\x1bb", "tab\there", "nul\x00"]:
        r = await client.post("/console/me/api-access/generate",
                              data={"csrf_token": csrf, "name": name})
        assert r.status_code in (400, 422), name
        assert "tsp_" not in r.text


async def test_a_form_starlette_cannot_read_is_refused_with_a_page(
        client, plan: PlanFixture) -> None:
    """Too many fields, or a file where none is taken: Starlette refuses the form before the
    page's handler runs; the answer is still a page, not the API's JSON."""
    member = await plan.add_user("member")
    csrf = await sign_in(client, member)
    before = await _tokens(client, member.auth)
    many = {f"f{i}": "x" for i in range(60)} | {"csrf_token": csrf}
    r = await client.post("/console/me/api-access/generate", data=many)
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html"), r.text
    assert "The form could not be read." in r.text
    r = await client.post("/console/me/api-access/generate", data={"csrf_token": csrf},
                          files={"name": ("a.txt", b"x")})
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html"), r.text
    assert await _tokens(client, member.auth) == before, "no token was made"


async def test_api_access_pages_a_persons_tokens_newest_first(
        client, plan: PlanFixture, clock, monkeypatch) -> None:  # noqa: ANN001
    member = await plan.add_user("member")
    for i in range(29):  # with the fixture's own, 30 tokens, each a second newer
        clock.advance(seconds=1)
        r = await client.post("/v1/me/tokens", json={"name": f"script-{i:02d}"},
                              headers=member.auth)
        assert r.status_code == 201, r.text
    await sign_in(client, member)
    first = await client.get("/console/me/api-access")
    names = re.findall(r"<td>(script-\d\d)</td>", first.text)
    assert names == [f"script-{i:02d}" for i in range(28, 3, -1)]  # the 25 newest, in order
    assert 'href="?offset=25"' in first.text and "?offset=0" not in first.text
    older = await client.get("/console/me/api-access", params={"offset": "25"})
    assert re.findall(r"<td>(script-\d\d)</td>", older.text) == [
        f"script-{i:02d}" for i in range(3, -1, -1)]
    assert older.text.count("<tr>") == 5 + 1  # four scripts, the fixture's token, the head
    assert 'href="?offset=0"' in older.text and "?offset=50" not in older.text
    beyond = await client.get("/console/me/api-access", params={"offset": "50"})
    assert "No token on this page." in beyond.text and 'href="?offset=25"' in beyond.text
    # At the furthest offset a page may have, no "Older" link leads back to the same page.
    monkeypatch.setattr(web, "OFFSET_MAX", 1)
    last = await client.get("/console/me/api-access", params={"offset": "5"})
    assert len(re.findall(r"<td>(script-\d\d)</td>", last.text)) == 25
    assert "Older" not in last.text.split('class="pager"')[1]
    monkeypatch.undo()
    for hostile, status in [("x", 422), ("-5", 200), ("99999999999", 200), ("1e3", 422)]:
        r = await client.get("/console/me/api-access", params={"offset": hostile})
        assert r.status_code == status, hostile
    # Generating answers with the first page, the new token on top.
    csrf = csrf_of(first.text)
    r = await client.post("/console/me/api-access/generate",
                          data={"csrf_token": csrf, "name": "newest"})
    assert r.status_code == 201
    assert re.findall(r"<td>(newest|script-\d\d)</td>", r.text)[:2] == ["newest", "script-28"]


@pytest.mark.parametrize("language", ["en", "fr"])
async def test_a_database_out_of_reach_is_a_page_for_a_browser_json_for_the_api(
        clock, language) -> None:
    """Every connection taken (the pool's one, held here) is a lost database to a request:
    a console page answers 503 as a page in the viewer's language, with `Retry-After`, and a
    form changes nothing; the API answers the same in its JSON shape (PostgreSQL: SQLite's
    engine has no such pool)."""
    from app.config import Settings
    from app.db import make_engine
    from app.main import create_app
    from tests.conftest import make_plan, migrated_pg_database

    async with migrated_pg_database() as db:
        settings = Settings(database_url=db.url, issuer="https://tessera.test",
                            secret_key="test-secret-key-for-signing-cookies",
                            token_cache_size=0)
        plan = await make_plan(db, clock)
        engine = make_engine(db.url, pool_size=1, pool_timeout=0.2)
        try:
            async with httpx2.AsyncClient(
                    transport=httpx2.ASGITransport(app=create_app(settings, clock=clock,
                                                                  engine=engine)),
                    base_url="https://tessera.test",
                    headers={"accept-language": language}) as c:
                csrf = await sign_in(c, plan.admin)
                before = await _tokens(c, plan.admin.auth)
                held = await engine.connect()  # the pool's one connection
                try:
                    await held.exec_driver_sql("SELECT 1")
                    for answer in [await c.get("/console/admin/tokens"),
                                   await c.get("/console/me/api-access"),
                                   await c.post("/console/me/api-access/generate",
                                                data={"csrf_token": csrf, "name": "lost"})]:
                        assert answer.status_code == 503, answer.text
                        assert answer.headers["content-type"].startswith("text/html")
                        assert answer.headers["retry-after"] == "1"
                        assert answer.headers["x-frame-options"] == "DENY"
                        assert web.i18n.Speech(language).gettext(
                            "Tessera cannot reach its database just now. Nothing was changed; "
                            "try again in a moment.").replace("'", "&#39;") in answer.text
                    r = await c.get("/v1/me/tokens", headers=plan.admin.auth)
                    assert r.status_code == 503 and r.json()["error"] == "unavailable"
                    # The sign-in and consent of the authorization endpoint: a page as well.
                    r = await c.get("/oauth2/authorize", params={
                        "response_type": "code", "client_id": "tessera-app",
                        "redirect_uri": "https://app.test/callback", "state": "s"})
                    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
                    assert r.headers["content-type"].startswith("text/html")
                    assert "cannot reach its database" in r.text
                finally:
                    await held.close()
                assert await _tokens(c, plan.admin.auth) == before  # the form made nothing
                assert (await c.get("/console/admin/tokens")).status_code == 200  # and back
        finally:
            await engine.dispose()


async def test_a_time_zone_cookie_naming_a_folder_is_utc_not_a_failure(client) -> None:
    """`Europe` is a folder of the time-zone database, not a zone: the page shows times in UTC
    (it once raised, and was counted and logged as a database outage)."""
    for name in ("Europe", "Etc", "America/Argentina", "../../etc/passwd"):
        client.cookies.set("tessera_tz", name)
        r = await client.get("/console/login")
        assert r.status_code == 200, (name, r.text)
        assert r.headers["content-type"].startswith("text/html")


async def test_the_authorization_endpoint_refuses_an_unreadable_form_with_a_page(client) -> None:
    """A form Starlette will not read (too many fields) and a method the endpoint does not take
    are pages for the person's browser, as on the console; never the API's JSON."""
    r = await client.post("/oauth2/authorize", data={f"f{i}": "x" for i in range(41)})
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html"), r.text
    r = await client.put("/oauth2/authorize")
    assert r.status_code == 405 and r.headers["content-type"].startswith("text/html"), r.text
    assert "allow" in r.headers


@pytest.mark.parametrize(("raised", "status", "words"), [
    ("data", 400, "A value you entered cannot be stored."),
    ("aborted", 503, "Another change came at the same moment"),
    ("bug", 500, "Something went wrong on our side."),
])
async def test_a_failure_no_handler_answers_is_a_page_with_words_for_its_cause(
        client, plan: PlanFixture, monkeypatch, raised, status, words) -> None:
    """What the page says follows what failed (a value the database refuses, a transaction
    aborted for a concurrent one, a bug), as the API's JSON does; and a page that fails to
    be drawn leaves the API's JSON answer, never a bare 500."""
    from sqlalchemy.exc import DBAPIError

    class Refused(Exception):
        def __init__(self, sqlstate: str) -> None:
            super().__init__("refused")
            self.sqlstate = sqlstate

    failures = {"data": DBAPIError("SELECT 1", {}, Refused("22021")),
                "aborted": DBAPIError("SELECT 1", {}, Refused("40P01")),
                "bug": RuntimeError("a bug, with words that must not show")}

    def fail(*_args, **_kwargs):  # noqa: ANN002, ANN003, ANN202
        raise failures[raised]

    await sign_in(client, plan.admin)
    monkeypatch.setattr(web, "whole_number", fail)
    r = await client.get("/console/admin/tokens")
    assert r.status_code == status and r.headers["content-type"].startswith("text/html")
    assert words in r.text.replace("&#39;", "'") and "must not show" not in r.text
    monkeypatch.setattr(web, "failure_page", fail)
    r = await client.get("/console/admin/tokens")
    assert r.status_code == status and r.headers["content-type"] == "application/json"


async def test_a_date_at_the_end_of_the_calendar_is_shown_not_a_failure() -> None:
    """An operator may set an exception until 9999-12-31 (a valid instant): in a zone ahead of
    UTC it is past the last date Python holds, so it is shown in UTC, never a 500."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from app.console.i18n import Speech

    speech = Speech("en", ZoneInfo("Pacific/Kiritimati"))
    assert speech.when(datetime(9999, 12, 31, 23, 59, tzinfo=UTC)) == "31 Dec 9999, 23:59"
    assert Speech("en", ZoneInfo("America/Los_Angeles")).when(
        datetime(1, 1, 1, tzinfo=UTC)) == "1 Jan 1, 00:00"
