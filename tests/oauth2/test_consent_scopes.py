"""The consent screen approves scopes for a plan, says what it approves, and cannot be forged.

Rule 11: an installation of a third-party integration records the scopes a plan admin allowed
on the consent screen, and nothing the integration gets for the plan (its machine tokens, a
member's authorization) carries more; a member cannot approve more; the screen says in plain
words when allowing installs the app for the whole plan or widens what it may do there
(machine access included). Rule 6 on the screen: an app not approved by the platform's review is
shown with a warning naming the date it stops working (urgent in its last week, or the date its
exception ends), and one that is refused is sent straight back with `unauthorized_client`.
RFC 6749 §3.1 (no parameter twice at the authorization endpoint) and §4.1.3 (the token request
repeats the `redirect_uri` the authorization request carried). The consent form's CSRF token is
bound to the login session (a new one at every sign-in), so it cannot be carried to another
session or planted with a cookie, and hostile values of it are refused with a page, never a 5xx.
"""

from __future__ import annotations

import html
import re
import time
from datetime import datetime, timedelta
from urllib.parse import urlencode

import httpx2
import pytest
from itsdangerous import TimestampSigner

from tests.conftest import Member
from tests.integrations.test_review_api import STEPS, install, machine_token, review
from tests.oauth2.browser import Browser, form_of, redirect_params
from tests.oauth2.conftest import REDIRECT, Registered, register_third_party
from tests.oauth2.test_security import authorize_url, get_code, pkce, token

pytestmark = pytest.mark.asyncio

EXPIRED = "The form has expired"
_STYLE = re.compile(r"<style>.*?</style>", re.DOTALL)
_WARNING = re.compile(r'<div class="(warning[^"]*)"[^>]*>(.*?)</div>', re.DOTALL)


def url(reg: Registered, scope: str) -> str:
    return authorize_url(reg.client_id, pkce()[1], scope=scope)


async def consent(browser: Browser, address: str, who: Member) -> httpx2.Response:
    """Open `address`, sign in as `who` when asked; the page that follows (the consent page, or
    a 303 back to the client)."""
    page = await browser.http.get(address)
    if 'name="password"' in page.text:
        page = await browser.follow(await browser.submit(page, email=who.email,
                                                         password=who.password))
    return page


def words(page: httpx2.Response) -> str:
    """The page's text as a person reads it (styles and tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", " ", _STYLE.sub("", page.text)))


def warning_of(page: httpx2.Response) -> tuple[list[str], str] | None:
    """The review warning of a consent page: its classes and its words."""
    found = _WARNING.search(page.text)
    if found is None:
        return None
    return found.group(1).split(), html.unescape(re.sub(r"<[^>]+>", "", found.group(2)))


def day(when: datetime | str) -> str:
    """A date as the consent screen names it: 14 February 2026."""
    when = datetime.fromisoformat(when) if isinstance(when, str) else when
    return when.strftime("%d %B %Y")


async def approved(client, plan, reg: Registered) -> list[str]:  # noqa: ANN001
    views = await client.get(f"/v1/plans/{plan.plan_id}/integrations", headers=plan.admin.auth)
    assert views.status_code == 200, views.text
    [view] = [v for v in views.json() if v["client_id"] == reg.client_id]
    return view["approved_scopes"]


async def installed_ids(client, plan) -> list[str]:  # noqa: ANN001
    views = await client.get(f"/v1/plans/{plan.plan_id}/integrations", headers=plan.admin.auth)
    assert views.status_code == 200, views.text
    return [v["client_id"] for v in views.json()]


async def machine(client, reg: Registered, **form: str) -> httpx2.Response:  # noqa: ANN001
    return await token(client, reg, grant_type="client_credentials", **form)


async def deadline_of(client, operator, reg: Registered) -> str:  # noqa: ANN001
    r = await client.get(f"/v1/integrations/{reg.id}", headers=operator)
    assert r.status_code == 200, r.text
    return r.json()["review_deadline"]


def replace_cookie(browser: Browser, name: str, value: str) -> None:
    """Put `value` in place of the cookie the server set (same host and path)."""
    [old] = [c for c in browser.http.cookies.jar if c.name == name]
    browser.http.cookies.set(name, value, domain=old.domain, path=old.path)
    assert browser.http.cookies[name] == value


# --- A. what an installation approves -------------------------------------------------------

async def test_allowing_profile_installs_profile_only_and_bounds_machine_tokens(
        app, client, operator, plan) -> None:
    tp = await register_third_party(client, operator)  # profile data:read data:write
    await install(app, plan, tp)  # a plan admin allows scope=profile
    r = await machine(client, tp, plan_id=str(plan.plan_id))
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "profile"
    r = await machine(client, tp, scope="data:write")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    bearer = {"Authorization": f"Bearer {await machine_token(client, tp)}"}
    r = await client.get("/v1/gateway/check", params={"scope": "data:write"}, headers=bearer)
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"
    r = await client.get("/v1/gateway/check", params={"scope": "profile"}, headers=bearer)
    assert r.status_code == 200, r.text
    assert await approved(client, plan, tp) == ["profile"]


async def test_member_cannot_approve_beyond_the_installation(app, client, operator, plan,
                                                             browser) -> None:
    tp = await register_third_party(client, operator)
    await install(app, plan, tp)
    member = await plan.add_user()

    page = await consent(browser, url(tp, "data:read"), member)
    assert page.status_code == 200, page.text[:300]
    assert "Only a plan admin can approve" in words(page)
    assert form_of(page.text)["buttons"] == [("decision", "deny")]
    assert 'value="allow"' not in page.text
    # Sending "allow" all the same issues nothing and approves nothing.
    back = await browser.submit(page, decision="allow")
    assert redirect_params(back)["error"] == "access_denied"
    assert "code" not in redirect_params(back)
    assert await approved(client, plan, tp) == ["profile"]

    # Within what the plan approved, a member may allow it.
    page = await consent(browser, url(tp, "profile"), member)
    assert ("decision", "allow") in form_of(page.text)["buttons"]
    back = await browser.submit(page, button=("decision", "allow"))
    assert "code" in redirect_params(back)


async def test_admin_widening_is_said_approved_and_audited(app, client, operator, plan,
                                                           browser) -> None:
    tp = await register_third_party(client, operator)
    await install(app, plan, tp)

    page = await consent(browser, url(tp, "profile data:read"), plan.admin)
    assert page.status_code == 200, page.text[:300]
    text = words(page)
    assert "Allowing also approves data:read for the whole plan" in text
    assert "machine access" in text
    back = await browser.submit(page, button=("decision", "allow"))
    assert "code" in redirect_params(back)

    assert await approved(client, plan, tp) == ["profile", "data:read"]
    r = await machine(client, tp, scope="data:read")
    assert r.status_code == 200 and r.json()["scope"] == "data:read", r.text
    r = await machine(client, tp)
    assert r.json()["scope"] == "profile data:read"
    r = await machine(client, tp, scope="data:write")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"

    r = await client.get(f"/v1/plans/{plan.plan_id}/audit", params={"limit": 200},
                         headers=plan.admin.auth)
    assert r.status_code == 200, r.text
    events = r.json()["items"]
    installs = [e["detail"] for e in events if e["action"] == "integration.installed"]
    assert [d["approved_scopes"] for d in installs] == [["profile"]]
    widened = [e["detail"] for e in events if e["action"] == "installation.scopes_approved"]
    assert [(d["previous"], d["approved_scopes"]) for d in widened] == [
        (["profile"], ["profile", "data:read"])]


async def test_install_note_says_whole_plan_and_machine_access(client, operator, plan,
                                                               browser) -> None:
    tp = await register_third_party(client, operator)
    page = await consent(browser, url(tp, "profile"), plan.admin)
    assert page.status_code == 200, page.text[:300]
    text = words(page)
    assert "for the whole plan" in text
    assert "machine access" in text
    back = await browser.submit(page, button=("decision", "allow"))
    assert "code" in redirect_params(back)

    # Installed, and asked for no more than it approved: nothing more to say.
    page = await consent(browser, url(tp, "profile"), plan.admin)
    assert page.status_code == 200, page.text[:300]
    assert 'class="note"' not in page.text
    assert "machine access" not in words(page)


# --- A. the platform's review on the consent screen (rule 6) ---------------------------------

async def test_review_warning_names_the_deadline_until_approved(client, operator, plan,
                                                                browser) -> None:
    tp = await register_third_party(client, operator)  # not_reviewed, 30 days to go
    deadline = await deadline_of(client, operator, tp)
    page = await consent(browser, url(tp, "profile"), plan.admin)
    assert page.status_code == 200, page.text[:300]
    found = warning_of(page)
    assert found is not None, page.text
    classes, text = found
    assert classes == ["warning"]
    assert "has not passed the platform's review" in text
    assert day(deadline) in text

    r = await review(client, operator, tp, status="approved", steps=STEPS)
    assert r.status_code == 200, r.text
    page = await browser.http.get(url(tp, "profile"))
    assert page.status_code == 200, page.text[:300]
    assert warning_of(page) is None
    assert "review" not in words(page)


async def test_review_warning_is_urgent_in_its_last_week(client, operator, plan, browser,
                                                         clock) -> None:
    tp = await register_third_party(client, operator)
    deadline = await deadline_of(client, operator, tp)
    clock.advance(days=22)  # 8 days to go
    page = await consent(browser, url(tp, "profile"), plan.admin)
    found = warning_of(page)
    assert found is not None, page.text
    assert found[0] == ["warning"]

    clock.advance(days=2)  # 6 days to go
    page = await browser.http.get(url(tp, "profile"))
    found = warning_of(page)
    assert found is not None, page.text
    classes, text = found
    assert classes == ["warning", "urgent"]
    assert day(deadline) in text


async def test_past_deadline_under_exception_says_until_when(client, operator, plan, browser,
                                                             clock) -> None:
    tp = await register_third_party(client, operator)  # limited data access
    clock.advance(days=31)
    until = clock.now() + timedelta(days=10)
    r = await client.put(f"/v1/integrations/{tp.id}/exception",
                         json={"until": until.isoformat()}, headers=operator)
    assert r.status_code == 200, r.text

    page = await consent(browser, url(tp, "profile"), plan.admin)
    assert page.status_code == 200, page.text[:300]
    found = warning_of(page)
    assert found is not None, page.text
    classes, text = found
    assert "urgent" in classes
    assert f"works under an exception until {day(until)}" in text
    # An admin may install it while the exception runs.
    back = await browser.submit(page, button=("decision", "allow"))
    assert "code" in redirect_params(back)
    assert await approved(client, plan, tp) == ["profile"]


@pytest.mark.parametrize("refusal", ["deadline_passed", "review_revoked"])
async def test_refused_integration_is_sent_straight_back(client, operator, plan, browser,
                                                         clock, refusal) -> None:
    tp = await register_third_party(client, operator)
    stale = await consent(browser, url(tp, "profile"), plan.admin)  # opened while it works
    assert stale.status_code == 200, stale.text[:300]
    if refusal == "review_revoked":
        assert (await review(client, operator, tp, status="revoked")).status_code == 200
    else:
        clock.advance(days=31)

    back = await browser.http.get(url(tp, "profile"))
    params = redirect_params(back)
    assert back.headers["location"].startswith(REDIRECT + "?")
    assert params["error"] == "unauthorized_client"
    assert refusal in params["error_description"]
    # The page opened before cannot install it either.
    back = await browser.submit(stale, button=("decision", "allow"))
    params = redirect_params(back)
    assert params["error"] == "unauthorized_client" and "code" not in params
    assert tp.client_id not in await installed_ids(client, plan)


# --- A. RFC 6749 §3.1 and §4.1.3 -------------------------------------------------------------

@pytest.mark.parametrize("name", ["scope", "state"])
async def test_repeated_scope_or_state_goes_back_with_invalid_request(browser, custom,
                                                                      name) -> None:
    _, challenge = pkce()
    again = {"scope": "profile", "state": "xyz"}[name]  # the same value, sent twice
    r = await browser.http.get(authorize_url(custom.client_id, challenge)
                               + "&" + urlencode({name: again}))
    params = redirect_params(r)
    assert r.headers["location"].startswith(REDIRECT + "?")
    assert params["error"] == "invalid_request"
    assert "code" not in params


@pytest.mark.parametrize("name", ["client_id", "redirect_uri"])
async def test_repeated_client_id_or_redirect_uri_is_shown_not_followed(browser, custom,
                                                                        name) -> None:
    _, challenge = pkce()
    again = {"client_id": custom.client_id, "redirect_uri": REDIRECT}[name]
    r = await browser.http.get(authorize_url(custom.client_id, challenge)
                               + "&" + urlencode({name: again}))
    assert r.status_code == 400 and "location" not in r.headers
    assert "This request cannot continue" in r.text


async def test_repeated_parameter_in_the_consent_form_issues_no_code(browser, plan,
                                                                     custom) -> None:
    page = await consent(browser, url(custom, "profile"), plan.admin)
    assert page.status_code == 200, page.text[:300]
    fields = form_of(page.text)["fields"]
    r = await browser.http.post("/oauth2/authorize", data={
        **fields, "decision": "allow", "scope": [fields["scope"], "profile tokens:read"]})
    params = redirect_params(r)
    assert params["error"] == "invalid_request"
    assert "code" not in params


async def test_token_request_repeats_the_redirect_uri_the_authorization_request_carried(
        client, browser, plan, custom) -> None:
    # Not carried (the client has exactly one registered URI): not required.
    verifier, challenge = pkce()
    code = await get_code(browser, plan, custom, challenge, redirect_uri=None)
    r = await token(client, custom, grant_type="authorization_code", code=code,
                    code_verifier=verifier)
    assert r.status_code == 200, r.text

    # Carried: required, and the same.
    verifier, challenge = pkce()
    code = await get_code(browser, plan, custom, challenge)
    base = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier}
    r = await token(client, custom, **base, redirect_uri="https://app.example.com/other")
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    r = await token(client, custom, **base)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text
    r = await token(client, custom, **base, redirect_uri=REDIRECT)
    assert r.status_code == 200, r.text


# --- B. CSRF bound to the login session ------------------------------------------------------

async def test_csrf_token_is_bound_to_the_login_session(browser, plan, custom) -> None:
    address = url(custom, "profile")
    page_a = await consent(browser, address, plan.admin)
    session_a = browser.http.cookies["tessera_session"]
    # Signed in again in the same browser (same double-submit cookie): session B.
    browser.http.cookies.delete("tessera_session")
    page_b = await consent(browser, address, plan.admin)
    assert page_a.status_code == page_b.status_code == 200
    token_a = form_of(page_a.text)["fields"]["csrf_token"]
    token_b = form_of(page_b.text)["fields"]["csrf_token"]
    assert token_a != token_b

    # Session A's cookie with session B's form.
    replace_cookie(browser, "tessera_session", session_a)
    r = await browser.submit(page_b, button=("decision", "allow"))
    assert r.status_code == 400 and "location" not in r.headers
    assert EXPIRED in words(r)
    # Session A's own form still goes through.
    r = await browser.submit(page_a, button=("decision", "allow"))
    assert "code" in redirect_params(r)


async def test_planted_double_submit_pair_does_not_pass_consent(browser, plan, custom) -> None:
    page = await consent(browser, url(custom, "profile"), plan.admin)
    assert page.status_code == 200, page.text[:300]
    planted = "planted-by-a-sibling-host-" + "x" * 20
    replace_cookie(browser, "tessera_csrf", planted)
    r = await browser.submit(page, button=("decision", "allow"), csrf_token=planted)
    assert r.status_code == 400 and "location" not in r.headers
    assert EXPIRED in words(r)
    # The session's own token is unaffected by the planted cookie.
    r = await browser.submit(page, button=("decision", "allow"))
    assert "code" in redirect_params(r)


@pytest.mark.parametrize(("headers", "signed_in"), [
    ({"Origin": "https://evil.example"}, False),
    ({"Origin": "null"}, False),
    ({"Referer": "https://evil.example/login-csrf.html"}, False),
    ({"Sec-Fetch-Site": "cross-site", "Origin": "https://tessera.test"}, False),
    ({"Sec-Fetch-Site": "same-site"}, False),
    ({"Origin": "https://tessera.test"}, True),
    ({"Sec-Fetch-Site": "same-origin", "Origin": "null"}, True),
    ({}, True),  # no browser another site could drive
])
async def test_login_form_posted_from_another_site_is_refused(app, plan, custom, headers,
                                                              signed_in) -> None:
    """Login CSRF: another site makes the victim's browser sign in to the attacker's account,
    with a double-submit pair it planted (a cookie from a sibling host and the same value in
    the form). The browser says where the form came from; only this site's own page passes."""
    victim = Browser(app)
    try:
        login = await victim.http.get(url(custom, "profile"))
        fields = {**form_of(login.text)["fields"], "email": plan.admin.email,
                  "password": plan.admin.password, "csrf_token": "planted-value"}
        replace_cookie(victim, "tessera_csrf", "planted-value")
        r = await victim.http.post("/oauth2/authorize", data=fields, headers=headers)
        if signed_in:
            assert r.status_code == 303 and "tessera_session" in r.cookies, r.text[:300]
        else:
            assert r.status_code == 400 and EXPIRED in words(r)
            assert "tessera_session" not in r.cookies
    finally:
        await victim.close()


HOSTILE = [  # (what, the csrf_token field, the tessera_csrf cookie as sent on the wire)
    ("a non-ASCII field", "jeton-é-✓", b"abcdef"),
    ("a non-ASCII cookie", "abcdef", "jeton-é-✓".encode()),
    ("an empty cookie", "abcdef", b""),
    ("a 10 kB cookie", "abcdef", b"a" * 10_240),
]


async def test_hostile_csrf_values_get_a_page_never_a_5xx(client, browser, plan,
                                                          custom) -> None:
    login = await browser.http.get(url(custom, "profile"))
    login_fields = {**form_of(login.text)["fields"], "email": plan.admin.email,
                    "password": plan.admin.password}
    page = await consent(browser, url(custom, "profile"), plan.admin)
    consent_fields = {**form_of(page.text)["fields"], "decision": "allow"}
    session = f"tessera_session={browser.http.cookies['tessera_session']}; ".encode()
    for what, field, cookie in HOSTILE:
        for signed_in, fields in ((False, login_fields), (True, consent_fields)):
            header = (session if signed_in else b"") + b"tessera_csrf=" + cookie
            r = await client.post("/oauth2/authorize", data={**fields, "csrf_token": field},
                                  headers={"Cookie": header})
            case = f"{what}, signed in: {signed_in}"
            assert 400 <= r.status_code < 500, (case, r.status_code)
            assert r.headers["content-type"].startswith("text/html"), case
            assert EXPIRED in words(r), case
            assert "location" not in r.headers, case
            assert "tessera_session" not in r.headers.get("set-cookie", ""), case


async def test_each_sign_in_starts_a_new_session(browser, plan, custom, monkeypatch) -> None:
    # Both sign-ins signed in the same second: the cookie's timestamp cannot tell them apart.
    second = int(time.time())
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda _self: second)
    address = url(custom, "profile")
    seen = []
    for _ in range(2):
        page = await browser.http.get(address)
        signed_in = await browser.submit(page, email=plan.admin.email,
                                         password=plan.admin.password)
        assert signed_in.status_code == 303, signed_in.text[:300]
        seen.append(signed_in.cookies["tessera_session"])
        browser.http.cookies.delete("tessera_session")
    assert seen[0] != seen[1]
