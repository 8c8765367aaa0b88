"""The attacks named by the OAuth 2.0 Security BCP (RFC 9700) are refused with the right error."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from urllib.parse import urlencode

import pytest

from tests.helpers import create_gateway_client, introspect
from tests.oauth2.browser import form_of, redirect_params
from tests.oauth2.conftest import REDIRECT, register_custom

pytestmark = pytest.mark.asyncio


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def authorize_url(client_id: str, challenge: str | None, **extra: str) -> str:
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
              "scope": "profile", "state": "xyz"}
    if challenge:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    params |= extra
    return "/oauth2/authorize?" + urlencode({k: v for k, v in params.items() if v is not None})


async def get_code(browser, plan, custom, challenge: str, **extra: str) -> str:  # noqa: ANN001
    back = await browser.authorize(authorize_url(custom.client_id, challenge, **extra),
                                   plan.admin.email, plan.admin.password)
    params = redirect_params(back)
    assert params["state"] == "xyz" and params["iss"] == "https://tessera.test"
    return params["code"]


async def token(client, custom, **form: str):  # noqa: ANN001, ANN201
    return await client.post("/oauth2/token", data=form,
                             auth=(custom.client_id, custom.client_secret))


async def test_unregistered_redirect_uri_is_shown_not_followed(browser, custom, plan) -> None:
    _, challenge = pkce()
    for uri in ("https://evil.example.com/callback", REDIRECT + "/", REDIRECT + "?x=1",
                "https://APP.example.com/callback"):
        r = await browser.http.get(authorize_url(custom.client_id, challenge, redirect_uri=uri))
        assert r.status_code == 400 and "location" not in r.headers
        assert "redirect URI" in r.text
    r = await browser.http.get(authorize_url("no-such-client", challenge))
    assert r.status_code == 400 and "unknown" in r.text


async def test_pkce_required_and_plain_refused(browser, custom) -> None:
    r = await browser.http.get(authorize_url(custom.client_id, None))
    assert redirect_params(r)["error"] == "invalid_request"
    assert redirect_params(r)["state"] == "xyz"
    verifier, _ = pkce()
    r = await browser.http.get(authorize_url(custom.client_id, None, code_challenge=verifier,
                                             code_challenge_method="plain"))
    assert redirect_params(r)["error"] == "invalid_request"
    assert "S256" in redirect_params(r)["error_description"]


async def test_unsupported_response_type_and_scope_beyond_client(browser, custom) -> None:
    _, challenge = pkce()
    r = await browser.http.get(authorize_url(custom.client_id, challenge, response_type="token"))
    assert redirect_params(r)["error"] == "unsupported_response_type"
    r = await browser.http.get(authorize_url(custom.client_id, challenge, scope="plan:admin"))
    assert redirect_params(r)["error"] == "invalid_scope"


async def test_code_reuse_is_refused_and_revokes_its_tokens(client, browser, plan,
                                                            custom) -> None:
    gateway = await create_gateway_client(client, plan)
    verifier, challenge = pkce()
    code = await get_code(browser, plan, custom, challenge)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": verifier}
    first = await token(client, custom, **form)
    assert first.status_code == 200, first.text
    assert first.headers["cache-control"] == "no-store"
    again = await token(client, custom, **form)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    for t in (first.json()["access_token"], first.json()["refresh_token"]):
        assert await introspect(client, gateway, t) == {"active": False}


async def test_code_bound_to_its_client_verifier_and_redirect(client, browser, plan,
                                                              custom) -> None:
    other = await register_custom(client, plan, name="Other app")
    verifier, challenge = pkce()
    code = await get_code(browser, plan, custom, challenge)
    base = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    r = await token(client, other, **base, code_verifier=verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = await token(client, custom, **base)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await token(client, custom, **base, code_verifier=pkce()[0])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = await token(client, custom, **{**base, "redirect_uri": REDIRECT + "x"},
                    code_verifier=verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    # None of the failures spent the code.
    r = await token(client, custom, **base, code_verifier=verifier)
    assert r.status_code == 200, r.text


async def test_expired_code(client, browser, plan, custom, clock) -> None:
    verifier, challenge = pkce()
    code = await get_code(browser, plan, custom, challenge)
    clock.advance(seconds=61)
    r = await token(client, custom, grant_type="authorization_code", code=code,
                    redirect_uri=REDIRECT, code_verifier=verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_wrong_client_secret(client, custom) -> None:
    r = await client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                          auth=(custom.client_id, "tss_wrong"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert r.headers["www-authenticate"].startswith("Basic")
    r = await client.post("/oauth2/token", data={"grant_type": "client_credentials",
                                                 "client_id": custom.client_id,
                                                 "client_secret": "nope"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


async def test_scope_beyond_client_at_token_endpoint(client, custom) -> None:
    r = await token(client, custom, grant_type="client_credentials", scope="plan:admin")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"


async def test_unsupported_grant_and_missing_parameters(client, custom) -> None:
    r = await token(client, custom, grant_type="password", username="a", password="b")
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = await token(client, custom, grant_type="implicit")
    assert r.json()["error"] == "unsupported_grant_type"
    r = await token(client, custom)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await token(client, custom, grant_type="authorization_code")
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await token(client, custom, grant_type="refresh_token")
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await client.post("/oauth2/token", json={"grant_type": "client_credentials"},
                          auth=(custom.client_id, custom.client_secret))
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


async def test_refresh_token_of_another_client_and_garbage(client, browser, plan,
                                                           custom) -> None:
    other = await register_custom(client, plan, name="Other app")
    verifier, challenge = pkce()
    code = await get_code(browser, plan, custom, challenge)
    issued = (await token(client, custom, grant_type="authorization_code", code=code,
                          redirect_uri=REDIRECT, code_verifier=verifier)).json()
    r = await token(client, other, grant_type="refresh_token",
                    refresh_token=issued["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = await token(client, custom, grant_type="refresh_token", refresh_token="garbage")
    assert r.json()["error"] == "invalid_grant"
    r = await token(client, custom, grant_type="refresh_token",
                    refresh_token=issued["refresh_token"], scope="profile data:write")
    assert r.json()["error"] == "invalid_scope"


async def test_csrf_token_is_required_on_forms(browser, plan, custom) -> None:
    _, challenge = pkce()
    page = await browser.http.get(authorize_url(custom.client_id, challenge))
    forged = await browser.submit(page, email=plan.admin.email, password=plan.admin.password,
                                  csrf_token="forged")
    assert forged.status_code == 400 and "expired" in forged.text
    assert "set-cookie" not in forged.headers or "tessera_session" not in \
        forged.headers["set-cookie"]


async def test_wrong_password_stays_on_the_login_page(browser, plan, custom) -> None:
    _, challenge = pkce()
    page = await browser.http.get(authorize_url(custom.client_id, challenge))
    r = await browser.submit(page, email=plan.admin.email, password="wrong password")
    assert r.status_code == 401 and "Wrong email or password" in r.text
    assert r.headers["x-frame-options"] == "DENY"


async def test_deny_redirects_with_access_denied(browser, plan, custom) -> None:
    _, challenge = pkce()
    back = await browser.authorize(authorize_url(custom.client_id, challenge),
                                   plan.admin.email, plan.admin.password, decision="deny")
    assert redirect_params(back)["error"] == "access_denied"
    assert redirect_params(back)["state"] == "xyz"


@pytest.mark.parametrize("header", ["Basic !!!not-base64", "Basic " + "bm9jb2xvbg==",
                                    "Basic " + "/w=="])
async def test_malformed_basic_client_credentials(client, header) -> None:
    # not base64; "nocolon" without a separator; a byte that is not UTF-8
    r = await client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                          headers={"Authorization": header})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert "malformed" in r.json()["error_description"]


async def test_forty_sign_ins_at_once_at_the_authorization_endpoint(browser, custom,
                                                                    plan) -> None:  # noqa: ANN001
    """Each sign-in reads the client in its unit of work, then asks the throttle (which on SQLite
    reads on a connection of its own): holding the first while waiting for the second, 40 at
    once would take every connection of the pool and answer 503 once it gave up, not what each
    had to say. Wrong passwords, to an attacker's taste: refused (200, the form again) or, past
    the limit, slowed down (429)."""
    _verifier, challenge = pkce()
    page = await browser.http.get(authorize_url(custom.client_id, challenge))
    form = form_of(page.text)
    answers = await asyncio.gather(*(browser.http.post(form["action"], data={
        **form["fields"], "email": plan.admin.email, "password": f"wrong-{i}"})
        for i in range(40)))
    codes = [a.status_code for a in answers]
    assert set(codes) <= {200, 400, 401, 429} and 503 not in codes, codes
