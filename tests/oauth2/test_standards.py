"""Details of the standards the OAuth endpoints follow, each named by its section:

- RFC 7617 §2: every Basic challenge names its realm (`Basic realm="tessera"`), the RFC 6749
  §5.2 error still in it;
- RFC 9110 §15.5.6: a 405 on `/oauth2/token`, `/oauth2/introspect` and `/oauth2/revoke` says
  which methods the resource allows (`Allow`), in RFC 6749 §5.2's shape;
- RFC 6749 §3.1: a parameter sent more than once to `/oauth2/authorize` is refused (sent back
  to the client with `invalid_request`, or shown on the page when it is the client or the
  redirect URI, which the error cannot be trusted to);
- RFC 6749 §4.1.3: `redirect_uri` is required at the token endpoint when the authorization
  request carried it, and must be the same; RFC 7636 §4.1: a malformed code verifier is an
  `invalid_request`;
- RFC 7009 §2.1: a client revokes only tokens issued to it, and is told when it tries another's.

Token requests and introspections are also answered in front of the application
(app/oauth2/fast_path.py, as `tessera serve` runs it): checked that way too.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from app import credentials
from app.credentials import SecretKind
from tests.helpers import create_gateway_client, introspect
from tests.oauth2 import test_fast_path
from tests.oauth2.browser import form_of, redirect_params
from tests.oauth2.conftest import REDIRECT, register_custom
from tests.oauth2.test_security import authorize_url, get_code, pkce, token

pytestmark = pytest.mark.asyncio

served = test_fast_path.served  # the fixture: a client through FastForms, as `tessera serve`

ENDPOINTS = ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"]
PATHS = ["application", "fast path"]


@pytest.fixture(params=PATHS)
def via(request, client, served):  # noqa: ANN001, ANN201
    """A client of the application itself, or of the application behind its fast paths."""
    return client if request.param == "application" else served


def form_for(endpoint: str) -> dict[str, str]:
    return {"grant_type": "client_credentials"} if endpoint == "/oauth2/token" else \
        {"token": credentials.generate(SecretKind.access)}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_every_basic_challenge_names_its_realm(via, plan, endpoint) -> None:
    client_id, secret = await create_gateway_client(via, plan)
    form = form_for(endpoint)
    attempts = [
        {"data": form, "auth": (client_id, secret + "x")},  # a wrong secret, HTTP Basic
        {"data": form, "auth": ("tc_" + "0" * 32, secret)},  # an unknown client
        {"data": form, "headers": {"Authorization": "Basic !!!"}},  # malformed Basic
        {"data": {**form, "client_id": client_id, "client_secret": "nope"}},  # in the body
    ]
    for attempt in attempts:
        r = await via.post(endpoint, **attempt)
        assert r.status_code == 401 and r.json()["error"] == "invalid_client", attempt
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith('Basic realm="tessera", '), challenge
        assert 'error="invalid_client"' in challenge, challenge


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_method_not_allowed_names_the_allowed_method(via, endpoint, method) -> None:
    r = await via.request(method, endpoint)
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"POST"}
    body = r.json()
    assert body["error"] == "invalid_request" and set(body) == {"error", "error_description"}
    assert body["error_description"]


@pytest.mark.parametrize("extra", ["scope=profile+data%3Aread", "scope=profile", "state=abc"])
async def test_a_repeated_parameter_is_sent_back_as_invalid_request(browser, custom,
                                                                    extra) -> None:
    _, challenge = pkce()
    name = extra.partition("=")[0]
    r = await browser.http.get(authorize_url(custom.client_id, challenge) + "&" + extra)
    assert r.status_code == 303 and r.headers["location"].startswith(REDIRECT + "?")
    params = redirect_params(r)
    assert params["error"] == "invalid_request" and "code" not in params
    assert f"'{name}'" in params["error_description"]
    assert params["iss"] == "https://tessera.test"


@pytest.mark.parametrize("name", ["client_id", "redirect_uri"])
async def test_a_repeated_client_or_redirect_uri_is_shown_not_followed(browser, custom,
                                                                       name) -> None:
    _, challenge = pkce()
    url = authorize_url(custom.client_id, challenge)
    assert (await browser.http.get(url)).status_code == 200  # once: the login page
    same = custom.client_id if name == "client_id" else REDIRECT
    for value in (same, "tc_other" if name == "client_id" else REDIRECT + "/other"):
        r = await browser.http.get(url + "&" + urlencode({name: value}))
        assert r.status_code == 400 and "location" not in r.headers, value
        assert "more than once" in r.text


async def test_a_repeated_field_of_a_posted_form_is_refused(browser, plan, custom) -> None:
    _, challenge = pkce()
    page = await browser.http.get(authorize_url(custom.client_id, challenge))
    fields = {**form_of(page.text)["fields"], "email": plan.admin.email,
              "password": plan.admin.password}
    # The login form with its action twice: no sign-in, the client told.
    r = await browser.http.post("/oauth2/authorize", data={**fields, "action": ["login"] * 2})
    assert r.status_code == 303 and r.headers["location"].startswith(REDIRECT + "?")
    assert redirect_params(r)["error"] == "invalid_request"
    assert "repeated" in redirect_params(r)["error_description"]  # not an OAuth name: unnamed
    assert "tessera_session" not in r.headers.get("set-cookie", "")

    # The consent form with two scopes: no code.
    page = await browser.follow(await browser.submit(page, email=plan.admin.email,
                                                     password=plan.admin.password))
    fields = form_of(page.text)["fields"]
    r = await browser.http.post("/oauth2/authorize", data={
        **fields, "decision": "allow", "scope": [fields["scope"], "profile data:read"]})
    assert r.status_code == 303 and r.headers["location"].startswith(REDIRECT + "?")
    params = redirect_params(r)
    assert params["error"] == "invalid_request" and "code" not in params
    assert "'scope'" in params["error_description"]
    # The same form, its fields once each, is accepted.
    r = await browser.http.post("/oauth2/authorize", data={**fields, "decision": "allow"})
    assert "code" in redirect_params(r)


async def test_redirect_uri_at_the_token_endpoint_as_in_the_authorization_request(
        via, browser, plan, custom) -> None:
    verifier, challenge = pkce()
    code = await get_code(browser, plan, custom, challenge)  # with redirect_uri
    base = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier}
    r = await token(via, custom, **base, redirect_uri=REDIRECT + "/other")
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"

    # Without redirect_uri (the client has one registered): redeemed without it.
    other_verifier, other_challenge = pkce()
    other = await get_code(browser, plan, custom, other_challenge, redirect_uri=None)
    r = await token(via, custom, grant_type="authorization_code", code=other,
                    code_verifier=other_verifier)
    assert r.status_code == 200, r.text

    r = await token(via, custom, **base)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text
    assert "redirect_uri" in r.json()["error_description"]
    r = await token(via, custom, **base, redirect_uri=REDIRECT)  # no refusal spent the code
    assert r.status_code == 200, r.text


async def test_a_malformed_code_verifier_is_invalid_request(via, browser, plan,
                                                            custom) -> None:
    """RFC 7636 §4.1: a verifier of 43 to 128 unreserved characters; anything else is a
    malformed request (RFC 6749 §5.2), whose description holds only the characters §5.2
    allows."""
    _, challenge = pkce()
    code = await get_code(browser, plan, custom, challenge)
    for verifier in ("too-short", "x" * 129, "~" * 42 + "!"):
        r = await token(via, custom, grant_type="authorization_code", code=code,
                        redirect_uri=REDIRECT, code_verifier=verifier)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text


async def test_a_client_revokes_only_tokens_issued_to_it(client, browser, plan,
                                                         custom) -> None:
    gateway = await create_gateway_client(client, plan)
    other = await register_custom(client, plan, name="Other app")
    verifier, challenge = pkce()
    code = await get_code(browser, plan, custom, challenge)
    issued = (await token(client, custom, grant_type="authorization_code", code=code,
                          redirect_uri=REDIRECT, code_verifier=verifier)).json()
    pair = (issued["access_token"], issued["refresh_token"])

    for creds in (gateway, (other.client_id, other.client_secret)):
        for secret in pair:
            r = await client.post("/oauth2/revoke", data={"token": secret}, auth=creds)
            assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
            assert "not issued to this client" in r.json()["error_description"]
    for secret in pair:  # left alone, the refresh token's grant included
        assert (await introspect(client, gateway, secret))["active"] is True

    own = (custom.client_id, custom.client_secret)
    unknown = credentials.generate(SecretKind.refresh)
    r = await client.post("/oauth2/revoke", data={"token": unknown}, auth=own)
    assert r.status_code == 200 and r.json() == {}
    r = await client.post("/oauth2/revoke", data={"token": issued["refresh_token"]}, auth=own)
    assert r.status_code == 200 and r.json() == {}
    for secret in pair:  # the refresh token took its grant with it
        assert await introspect(client, gateway, secret) == {"active": False}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("name", ['a"', "%C3%A9", "a%5C", "%0A", "x" * 60])
async def test_a_repeated_parameter_of_any_name_is_a_400(via, plan, endpoint, name) -> None:
    """RFC 6749 §3.1 on the form endpoints, whatever the repeated name: a name that may not
    stand in an `error_description` (RFC 6749 §5.2's characters) is not echoed, and the answer
    is a 400, never a 500."""
    creds = await create_gateway_client(via, plan)
    r = await via.post(endpoint, content=f"{name}=1&{name}=2&token=x&grant_type=x".encode(),
                       headers={"content-type": "application/x-www-form-urlencoded"},
                       auth=creds)
    assert r.status_code == 400, r.text
    assert r.json() == {"error": "invalid_request",
                        "error_description": "a parameter is repeated"}
