"""The console's journeys in a real browser (headless Chromium, Playwright), each page checked
with axe-core (no serious or critical violation) and kept as a screenshot in test-artifacts/.

Served as in tests/oauth2/test_browser_chromium.py, whose fixtures are used here: the test's
app (same database, same FrozenClock) over real HTTP on loopback, a fresh browser context per
test that must never leave 127.0.0.1.
"""

from __future__ import annotations

import re
import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx2
import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, expect

from tests.conftest import Member, PlanFixture
from tests.oauth2.conftest import register_custom, register_third_party

# Its fixtures too (callback, chromium, live, page): pytest finds them imported here.
from tests.oauth2.test_browser_chromium import (  # noqa: F401
    ClientApp,
    callback,
    chromium,
    live,
    page,
    pkce,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.browser]

AXE = Axe()
STEPS = {"business_verification": True, "terms_accepted": True, "review": True}


async def checked(tab: Page, name: str, artifacts: Path) -> None:
    """axe-core on the page as it stands: no serious or critical violation; then a
    screenshot."""
    results = await AXE.run(tab)
    bad = [(v["id"], v["impact"], v["help"], [n["target"] for n in v["nodes"]][:3])
           for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    assert bad == [], f"{name}: {bad}"
    shot = artifacts / f"console-{name}.png"
    png = await tab.screenshot(path=str(shot), full_page=True)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


async def sign_in(tab: Page, base: str, member: Member, path: str) -> None:
    """Open a console page, get sent to sign in, sign in, land on the page."""
    await tab.goto(f"{base}{path}")
    await expect(tab.get_by_role("heading", name="Sign in")).to_be_visible()
    await tab.get_by_label("Email").fill(member.email)
    await tab.get_by_label("Password").fill(member.password)
    await tab.get_by_role("button", name="Sign in").click()
    await tab.wait_for_url(re.compile(re.escape(path) + r"$"))


async def test_an_admin_sets_the_period_after_reading_its_preview(
        page, live, plan: PlanFixture, artifacts) -> None:  # noqa: ANN001, F811
    member = await plan.add_user("member")
    plan.clock.advance(days=10)
    await page.goto(f"{live}/console/login")
    await checked(page, "sign-in", artifacts)
    await sign_in(page, live, plan.admin, "/console/admin/security/api-tokens")
    await expect(page.get_by_role("heading", name="API access tokens")).to_be_visible()
    await expect(page.get_by_text("Off: tokens live until they are revoked.")).to_be_visible()
    await checked(page, "admin-security", artifacts)

    await page.get_by_label("Expire tokens after").fill("5")
    await page.get_by_label("Unit").select_option("days")
    await page.get_by_role("button", name="Preview").click()
    await expect(page.locator("#count-now")).to_have_text("2")
    preview = page.get_by_role("table")
    await expect(preview).to_contain_text(member.email)
    await expect(preview).to_contain_text(plan.admin.email)
    await checked(page, "admin-security-preview", artifacts)

    # Both confirmations, by keyboard: the admin's own tokens are named.
    own = page.get_by_label(re.compile("This includes your own tokens"))
    await own.focus()
    await page.keyboard.press("Space")
    await page.get_by_label(re.compile("I understand that 2 tokens")).check()
    await page.get_by_role("button", name="Activate").click()
    await expect(page.get_by_role("status")).to_have_text("The expiration period is active.")
    await expect(page.get_by_text("Tokens expire 5 days after they were generated.")
                 ).to_be_visible()
    async with httpx2.AsyncClient(base_url=live, trust_env=False) as http:
        assert (await http.get("/v1/me", headers=member.auth)).status_code == 401

    await page.get_by_role("link", name="Tokens").click()
    await page.get_by_label("Status").select_option("expired")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("table")).to_contain_text(member.email)
    await expect(page.locator(".why").first).to_contain_text("expired")
    await checked(page, "admin-tokens", artifacts)
    await page.get_by_role("link", name="Audit log").click()
    await expect(page.get_by_role("table")).to_contain_text("plan.period_set")
    await checked(page, "admin-audit", artifacts)


async def test_an_admin_revokes_a_members_token_from_the_tokens_page(
        page, live, plan: PlanFixture) -> None:  # noqa: ANN001, F811
    member = await plan.add_user("member")
    await sign_in(page, live, plan.admin, "/console/admin/tokens")
    row = page.locator("tbody tr", has_text=member.email)
    await row.get_by_role("button", name=re.compile("^Revoke ")).click()
    await expect(page.locator("tbody tr", has_text=member.email).locator(".badge")
                 ).to_have_text("revoked")
    async with httpx2.AsyncClient(base_url=live, trust_env=False) as http:
        assert (await http.get("/v1/me", headers=member.auth)).status_code == 401
        assert (await http.get("/v1/me", headers=plan.admin.auth)).status_code == 200


async def test_an_admin_reactivates_asks_for_an_exception_and_installs_from_the_directory(
        page, live, client, operator, plan: PlanFixture, artifacts) -> None:  # noqa: ANN001, F811
    custom = await register_custom(client, plan)
    r = await client.put(f"/v1/integrations/{custom.id}/judgement", headers=operator, json={
        "deactivate_at": (plan.clock.now() + timedelta(days=20)).isoformat()})
    assert r.status_code == 200
    r = await client.post(f"/v1/plans/{plan.plan_id}/integrations/{custom.id}/deactivate",
                          headers=plan.admin.auth)
    assert r.json()["state"] == "deactivated"
    app_name = f"Acme {secrets.token_hex(3)}"  # the directory lists every plan's approved apps
    approved = await register_third_party(client, operator, name=app_name)
    await client.put(f"/v1/integrations/{approved.id}/review", headers=operator,
                     json={"status": "approved", "steps": STEPS})

    await sign_in(page, live, plan.admin, "/console/admin/integrations")
    card = page.locator("li.card", has_text="In-house app")
    await expect(card.get_by_text("Needs attention")).to_be_visible()
    await checked(page, "admin-integrations", artifacts)
    await card.get_by_role("button", name="Reactivate In-house app").click()
    await expect(page.get_by_role("status")).to_have_text("Done.")
    card = page.locator("li.card", has_text="In-house app")
    await expect(card.locator("dd", has_text="active")).to_be_visible()

    await card.get_by_label("Why it must keep working").fill("Payroll runs on it")
    await card.get_by_role("button", name="Request exception In-house app").click()
    await expect(page.get_by_role("status")).to_contain_text("sent to the platform")
    queue = (await client.get("/v1/exception-requests", headers=operator)).json()
    assert [q["message"] for q in queue
            if q["integration_id"] == str(custom.id)] == ["Payroll runs on it"]

    await page.get_by_role("link", name="Directory").click()
    await page.get_by_label("Search").fill(app_name.lower())
    await page.get_by_role("button", name="Search").click()
    await checked(page, "admin-directory", artifacts)
    await page.get_by_role("link", name=f"Install {app_name}").click()
    await expect(page.get_by_role("heading", name=f"Install {app_name}?")).to_be_visible()
    await expect(page.locator("ul.perms li")).to_have_count(3)
    await checked(page, "admin-install", artifacts)
    await page.get_by_role("button", name="Allow").click()
    await expect(page.locator("li.card", has_text=app_name)).to_be_visible()
    views = (await client.get(f"/v1/plans/{plan.plan_id}/integrations",
                              headers=plan.admin.auth)).json()
    assert {v["name"] for v in views} == {"In-house app", app_name}


async def test_a_user_regenerates_a_token_and_disconnects_an_app(
        page, live, callback, client, plan: PlanFixture, artifacts) -> None:  # noqa: ANN001, F811
    member = await plan.add_user("member")
    await sign_in(page, live, member, "/console/me/api-access")
    await page.get_by_label("Name").fill("laptop")
    await page.get_by_role("button", name="Generate", exact=True).click()
    secret = await page.get_by_role("textbox", name="New token").input_value()
    assert secret.startswith("tsp_")
    await expect(page.get_by_text("it is shown only once")).to_be_visible()
    await checked(page, "me-api-access-new", artifacts)
    await page.get_by_role("button", name="Regenerate laptop").click()
    second = await page.get_by_role("textbox", name="New token").input_value()
    assert second != secret
    await expect(page.get_by_text(f"ending in {secret[-4:]}")).to_be_visible()
    await page.goto(f"{live}/console/me/api-access")  # the secret is never shown again
    assert second not in await page.content()
    async with httpx2.AsyncClient(base_url=live, trust_env=False) as http:
        assert (await http.get("/v1/me", headers={"Authorization": f"Bearer {secret}"})
                ).status_code == 401
        assert (await http.get("/v1/me", headers={"Authorization": f"Bearer {second}"})
                ).status_code == 200
    # The rows' buttons share one form, each naming its token (`formaction`).
    await page.get_by_role("button", name="Revoke laptop").click()
    await expect(page.get_by_role("status")).to_contain_text("revoked")
    await expect(page.get_by_role("button", name="Revoke laptop")).to_have_count(0)
    async with httpx2.AsyncClient(base_url=live, trust_env=False) as http:
        assert (await http.get("/v1/me", headers={"Authorization": f"Bearer {second}"})
                ).status_code == 401

    # The same sign-in serves the consent screen: the user connects an app.
    app = await register_custom(client, plan, redirect_uris=[callback.uri])
    verifier, challenge = pkce()
    await page.goto(f"{live}/oauth2/authorize?" + urlencode({
        "response_type": "code", "client_id": app.client_id, "redirect_uri": callback.uri,
        "scope": "profile tokens:read", "state": secrets.token_urlsafe(8),
        "code_challenge": challenge, "code_challenge_method": "S256"}))
    await page.get_by_role("button", name="Allow", exact=True).click()
    await page.wait_for_url(callback.matches)
    (code,) = callback.params()["code"]
    async with httpx2.AsyncClient(base_url=live, trust_env=False) as http:
        r = await http.post("/oauth2/token", auth=(app.client_id, app.client_secret), data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": callback.uri,
            "code_verifier": verifier})
        assert r.status_code == 200, r.text
        refresh = r.json()["refresh_token"]

    await page.goto(f"{live}/console/admin/tokens")  # a member: the refusal, as a page
    await expect(page.get_by_role("alert")).to_contain_text("only a system admin")
    await checked(page, "refused", artifacts)
    await page.goto(f"{live}/console/me/connected-apps")
    card = page.locator("li.card", has_text="In-house app")
    await expect(card).to_contain_text("profile")
    await checked(page, "me-connected-apps", artifacts)
    await card.get_by_role("button", name="Disconnect In-house app").click()
    await expect(page.get_by_role("status")).to_contain_text("disconnected")
    async with httpx2.AsyncClient(base_url=live, trust_env=False) as http:
        r = await http.post("/oauth2/token", auth=(app.client_id, app.client_secret), data={
            "grant_type": "refresh_token", "refresh_token": refresh})
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_an_operator_approves_a_review(page, live, client, operator, artifacts) -> None:  # noqa: ANN001, F811
    name = f"Acme {secrets.token_hex(3)}"  # the queue shows every plan's integrations
    tp = await register_third_party(client, operator, name=name)
    await page.goto(f"{live}/console/operator")
    await expect(page.get_by_role("heading", name="Operator sign-in")).to_be_visible()
    await checked(page, "operator-sign-in", artifacts)
    await page.get_by_label("Operator token").fill(
        operator["Authorization"].removeprefix("Bearer "))
    await page.get_by_role("button", name="Sign in").click()
    card = page.locator("li.card", has_text=name)
    await expect(card).to_be_visible()
    await checked(page, "operator-queue", artifacts)
    for step in ("business verification", "terms accepted", "review"):
        await card.get_by_label(step, exact=True).check()
    await card.get_by_label("Status").select_option("approved")
    await card.get_by_role("button", name=f"Save the review of {name}").click()
    await expect(page.get_by_role("status")).to_have_text("Done.")
    review = (await client.get(f"/v1/integrations/{tp.id}", headers=operator)).json()
    assert review["review_status"] == "approved"
    await page.get_by_role("link", name="Requests and reports").click()
    await checked(page, "operator-requests", artifacts)


async def test_pages_fit_a_phone_and_speak_french(chromium: Browser, live, plan: PlanFixture,  # noqa: ANN001, F811
                                                  artifacts) -> None:
    context = await chromium.new_context(viewport={"width": 390, "height": 844},
                                         locale="fr-FR", timezone_id="Europe/Paris")
    try:
        tab = await context.new_page()
        await tab.goto(f"{live}/console/login")
        await expect(tab.get_by_role("heading", name="Connexion")).to_be_visible()
        await tab.get_by_label("Adresse e-mail").fill(plan.admin.email)
        await tab.get_by_label("Mot de passe").fill(plan.admin.password)
        await tab.get_by_role("button", name="Connexion").click()
        await expect(tab.get_by_role("heading", name="Accès API")).to_be_visible()
        await tab.reload()  # the script has told the server the browser's time zone
        await expect(tab.get_by_text("Les dates sont affichées en Europe/Paris.")).to_be_visible()
        for path, name in [("/console/me/api-access", "phone-api-access"),
                           ("/console/admin/security/api-tokens?value=1&unit=years",
                            "phone-admin-security"),
                           ("/console/admin/tokens", "phone-admin-tokens")]:
            await tab.goto(f"{live}{path}")
            width = await tab.evaluate("document.documentElement.scrollWidth")
            wide = await tab.evaluate("""[...document.querySelectorAll('body *')].filter(
                e => e.getBoundingClientRect().right > 391).slice(0, 8).map(
                e => e.tagName + '.' + e.className)""")  # what sticks out, if anything
            assert width <= 390, (path, width, wide)  # no sideways scrolling of the page
            await checked(tab, name, artifacts)
    finally:
        await context.close()
