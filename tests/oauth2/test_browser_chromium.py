"""The login and consent pages of /oauth2/authorize in a real browser (headless Chromium).

The test's app (same database, same FrozenClock) is served by uvicorn in-process on a free
loopback port. The integration's redirect URI is http://127.0.0.1:<port>/callback on a second
tiny in-process server standing in for the client, which records what the browser brought back.
(page.route cannot stand in for the client: Playwright does not route the targets of HTTP
redirects, and the authorization response is a 303.) Every request the browser makes is checked
to stay on 127.0.0.1. A screenshot of the consent screen is kept in test-artifacts/.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright, expect

from app.oauth2.scopes import CATALOGUE
from tests.conftest import Member, require
from tests.oauth2.conftest import Registered, register_custom

pytestmark = [pytest.mark.asyncio, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCOPES = ["profile", "tokens:read", "data:read"]
ISSUER = "https://tessera.test"  # settings.issuer in tests/conftest.py
TIMEOUT_MS = 15_000


class _Server(uvicorn.Server):
    """uvicorn without its SIGINT/SIGTERM handlers: Ctrl-C stays pytest's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(asgi_app) -> AsyncIterator[str]:  # noqa: ANN001
    """Serve an ASGI app over real HTTP on a free 127.0.0.1 port; yields its base URL."""
    config = uvicorn.Config(asgi_app, host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off")
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()  # startup failed: raise its error
                    pytest.fail("uvicorn stopped before it started")
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def live(app) -> AsyncIterator[str]:  # noqa: ANN001
    """The test's app (same database, same FrozenClock) over real HTTP."""
    async with serving(app) as base:
        yield base


class ClientApp:
    """The client's side of the redirect: a tiny ASGI app that records what reached it."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.base = ""  # set once served

    @property
    def uri(self) -> str:
        return f"{self.base}/callback"

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        assert scope["type"] == "http"
        found = scope["path"] == "/callback"  # anything else (the favicon) is a 404
        if found:
            query = scope["query_string"].decode("latin-1")
            self.hits.append("/callback" + ("?" + query if query else ""))
        body = (b"<!doctype html><title>Client</title><p>Back at the client."
                if found else b"not found")
        await send({"type": "http.response.start", "status": 200 if found else 404,
                    "headers": [(b"content-type", b"text/html; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def matches(self, url: str) -> bool:
        return url == self.uri or url.startswith(self.uri + "?")

    def params(self) -> dict[str, list[str]]:
        """The query the browser brought back; exactly one request must have arrived."""
        assert len(self.hits) == 1, self.hits
        return parse_qs(urlsplit(self.hits[0]).query)


@pytest.fixture
async def callback() -> AsyncIterator[ClientApp]:
    """The redirect URI: http://127.0.0.1:<port>/callback on a second loopback server."""
    client_app = ClientApp()
    async with serving(client_app) as base:
        client_app.base = base
        yield client_app


def _chromium_installed() -> bool:
    return bool(shutil.which("chromium")) or Path(CHROMIUM).exists()


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Browser]:
    require(_chromium_installed(), f"Chromium ({CHROMIUM})")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                           args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def page(chromium: Browser) -> AsyncIterator[Page]:
    """A fresh browser context (no cookies) per test; it must never leave 127.0.0.1."""
    context = await chromium.new_context(viewport={"width": 720, "height": 820},
                                         device_scale_factor=1, locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    seen: list[str] = []  # "request" fires for redirect targets too, unlike page.route
    context.on("request", lambda request: seen.append(request.url))
    try:
        yield await context.new_page()
    finally:
        await context.close()
    elsewhere = [u for u in seen if urlsplit(u).hostname != "127.0.0.1"]
    assert not elsewhere, f"the browser left the loopback interface: {elsewhere}"


def pkce() -> tuple[str, str]:
    """RFC 7636 §4.1-§4.2: a verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass
class Flow:
    registered: Registered
    member: Member
    callback: ClientApp
    state: str
    verifier: str


async def sign_in_to_consent(page: Page, live: str, callback: ClientApp, client, plan,  # noqa: ANN001
                             artifacts: Path | None, backend: str) -> Flow:
    """Open the authorize URL, sign in through the form, and check the consent screen."""
    registered = await register_custom(client, plan, redirect_uris=[callback.uri])
    member = await plan.add_user()

    verifier, challenge = pkce()
    state = secrets.token_urlsafe(16)
    url = f"{live}/oauth2/authorize?" + urlencode({
        "response_type": "code", "client_id": registered.client_id,
        "redirect_uri": callback.uri, "scope": " ".join(SCOPES), "state": state,
        "code_challenge": challenge, "code_challenge_method": "S256"})
    response = await page.goto(url)
    assert response is not None and response.status == 200

    # The login page, filled in as a person would.
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.get_by_text("In-house app", exact=True)).to_be_visible()
    await page.get_by_label("Email").fill(member.email)
    await page.get_by_label("Password").fill(member.password)
    await page.get_by_role("button", name="Sign in").click()

    # The consent page: every requested permission in plain words, and both answers.
    await expect(page.get_by_role("heading", name="Allow In-house app?")).to_be_visible()
    items = page.locator("ul.perms li")
    await expect(items).to_have_count(len(SCOPES))
    for i, scope in enumerate(SCOPES):
        await expect(items.nth(i)).to_contain_text(CATALOGUE[scope])
        await expect(items.nth(i).locator("code")).to_have_text(scope)
    await expect(page.get_by_role("button", name="Allow", exact=True)).to_be_visible()
    await expect(page.get_by_role("button", name="Deny", exact=True)).to_be_visible()
    await expect(page.get_by_text(f"Signed in as {member.email}")).to_be_visible()
    await expect(page.get_by_role("alert")).to_have_count(0)
    if artifacts is not None:
        shot = artifacts / f"consent-{backend}.png"
        await page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return Flow(registered, member, callback, state, verifier)


async def test_login_consent_allow_then_exchange_code(page, live, callback, client, plan,  # noqa: ANN001
                                                      artifacts, database) -> None:
    flow = await sign_in_to_consent(page, live, callback, client, plan, artifacts,
                                    database.backend)
    registered = flow.registered

    await page.get_by_role("button", name="Allow", exact=True).click()
    await page.wait_for_url(callback.matches)
    await expect(page.get_by_text("Back at the client.")).to_be_visible()
    assert page.url == callback.base + callback.hits[0]
    params = callback.params()
    assert set(params) == {"code", "state", "iss"}, params
    assert params["state"] == [flow.state] and params["iss"] == [ISSUER]
    (code,) = params["code"]

    # The code is real: the client redeems it over HTTP at the same server, with the verifier.
    async with httpx2.AsyncClient(base_url=live, trust_env=False) as http:
        r = await http.post("/oauth2/token", auth=(registered.client_id,
                                                   registered.client_secret), data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": callback.uri,
            "code_verifier": flow.verifier})
        assert r.status_code == 200, r.text
        token = r.json()
        assert token["token_type"] == "Bearer" and token["scope"] == " ".join(SCOPES)
        me = await http.get("/v1/me",
                            headers={"Authorization": f"Bearer {token['access_token']}"})
        assert me.status_code == 200, me.text
        assert me.json()["id"] == str(flow.member.user_id)

        # And it is single use.
        again = await http.post("/oauth2/token", auth=(registered.client_id,
                                                       registered.client_secret), data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": callback.uri,
            "code_verifier": flow.verifier})
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


async def test_login_consent_deny(page, live, callback, client, plan) -> None:  # noqa: ANN001
    flow = await sign_in_to_consent(page, live, callback, client, plan, None, "")
    state = flow.state

    await page.get_by_role("button", name="Deny", exact=True).click()
    await page.wait_for_url(callback.matches)
    params = callback.params()
    assert params["error"] == ["access_denied"], params
    assert params["state"] == [state] and params["iss"] == [ISSUER]
    assert "code" not in params
