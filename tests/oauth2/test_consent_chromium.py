"""What a plan admin reads before installing a third-party app not yet reviewed, in a real
browser (headless Chromium): rules 6 and 11 on the consent screen.

Served as in tests/oauth2/test_browser_chromium.py, whose fixtures are used here: the test's
app (same database, same FrozenClock) over real HTTP on loopback, a second loopback server
standing in for the client at the redirect URI, a fresh browser context per test that must never
leave 127.0.0.1. The admin opens the authorize URL, signs in through the form, and sees the
review warning with the date the app stops working (marked urgent in its last week) and the note
that allowing installs it for the whole plan with machine access; allowing brings the browser
back to the client with a code, which the client redeems. A screenshot of that consent screen
is kept in test-artifacts/.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

import httpx2
import pytest
from playwright.async_api import Page, expect

from tests.conftest import PlanFixture
from tests.oauth2.conftest import Registered, register_third_party

# Its fixtures too (callback, chromium, live, page): pytest finds them imported here.
from tests.oauth2.test_browser_chromium import (  # noqa: F401
    ISSUER,
    ClientApp,
    callback,
    chromium,
    live,
    page,
    pkce,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.browser]

SCOPES = "profile data:read"
URGENT = re.compile(r"(^|\s)urgent(\s|$)")


@dataclass
class Flow:
    state: str
    verifier: str
    deadline: datetime


async def register(client, operator, client_app: ClientApp) -> Registered:  # noqa: ANN001
    """A third-party app (not reviewed: 30 days to go) redirecting to the loopback client."""
    return await register_third_party(client, operator, redirect_uris=[client_app.uri])


async def sign_in_to_consent(tab: Page, base: str, client_app: ClientApp, client,  # noqa: ANN001
                             operator, plan: PlanFixture, tp: Registered) -> Flow:
    """Open the authorize URL, sign in as the plan admin through the form, and reach the
    consent screen."""
    r = await client.get(f"/v1/integrations/{tp.id}", headers=operator)
    deadline = datetime.fromisoformat(r.json()["review_deadline"])
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(16)
    response = await tab.goto(f"{base}/oauth2/authorize?" + urlencode({
        "response_type": "code", "client_id": tp.client_id, "redirect_uri": client_app.uri,
        "scope": SCOPES, "state": state, "code_challenge": challenge,
        "code_challenge_method": "S256"}))
    assert response is not None and response.status == 200
    await expect(tab.get_by_role("heading", name="Sign in")).to_be_visible()
    await tab.get_by_label("Email").fill(plan.admin.email)
    await tab.get_by_label("Password").fill(plan.admin.password)
    await tab.get_by_role("button", name="Sign in").click()
    await expect(tab.get_by_role("heading", name="Allow Acme Analytics?")).to_be_visible()
    return Flow(state, verifier, deadline)


async def test_admin_reads_the_review_warning_and_install_note_then_allows(
        page, live, callback, client, operator, plan, artifacts,  # noqa: ANN001, F811
        database) -> None:
    tp = await register(client, operator, callback)
    flow = await sign_in_to_consent(page, live, callback, client, operator, plan, tp)

    warning = page.get_by_role("status")
    await expect(warning).to_be_visible()
    await expect(warning).to_contain_text("has not passed the platform's review")
    await expect(warning).to_contain_text(flow.deadline.strftime("%d %B %Y"))
    await expect(warning).not_to_have_class(URGENT)
    note = page.locator(".note")
    await expect(note).to_be_visible()
    await expect(note).to_contain_text("whole plan")
    await expect(note).to_contain_text("machine access")
    shot = artifacts / f"consent-install-{database.backend}.png"
    png = await page.screenshot(path=str(shot), full_page=True)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"

    await page.get_by_role("button", name="Allow", exact=True).click()
    await page.wait_for_url(callback.matches)
    params = callback.params()
    assert set(params) == {"code", "state", "iss"}, params
    assert params["state"] == [flow.state] and params["iss"] == [ISSUER]

    # Installed with what the screen listed; the code is real and carries exactly that.
    views = await client.get(f"/v1/plans/{plan.plan_id}/integrations", headers=plan.admin.auth)
    [view] = [v for v in views.json() if v["client_id"] == tp.client_id]
    assert view["approved_scopes"] == SCOPES.split()
    async with httpx2.AsyncClient(base_url=live, trust_env=False) as http:
        r = await http.post("/oauth2/token", auth=(tp.client_id, tp.client_secret), data={
            "grant_type": "authorization_code", "code": params["code"][0],
            "redirect_uri": callback.uri, "code_verifier": flow.verifier})
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == SCOPES


async def test_warning_is_urgent_three_days_before_the_deadline(
        page, live, callback, client, operator, plan, clock) -> None:  # noqa: ANN001, F811
    tp = await register(client, operator, callback)
    clock.advance(days=27)  # 3 days to go
    flow = await sign_in_to_consent(page, live, callback, client, operator, plan, tp)

    warning = page.get_by_role("status")
    await expect(warning).to_be_visible()
    await expect(warning).to_have_class(URGENT)
    await expect(warning).to_contain_text(flow.deadline.strftime("%d %B %Y"))
    await expect(warning).to_contain_text("less than a week away")
