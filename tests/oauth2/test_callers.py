"""Rule 6 for an integration as a caller: one access decision at every endpoint where it
authenticates (introspection, token, revocation, authorize), for the three kinds of caller.

- A caller refused as a whole (its review revoked; unapproved past its review deadline with no
  running limited-data exception; a custom one whose own installation is deactivated) gets
  `unauthorized_client` naming the rule (and the deadline, when there is one): 403 from
  introspection, 400 from the token and revocation endpoints, a redirect from authorize. Nothing
  it asks for happens, and it works again on the next call once the refusal is lifted.
- Introspection rights: a custom caller sees its own plan, a third-party caller the plans where
  it is installed and allowed, and only a platform resource server (`kind: platform`,
  registered by operators; it obtains no tokens) every plan. Anything else is exactly
  `{"active": false}`.
- Revocation: a client revokes its own tokens only; another client's or a personal token is
  refused (`invalid_grant`) and left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx2
import pytest

from app import credentials
from app.clock import FrozenClock
from app.credentials import SecretKind
from tests.conftest import PlanFixture
from tests.helpers import create_gateway_client, introspect
from tests.integrations.test_review_api import install, machine_token, review
from tests.oauth2.browser import Browser, redirect_params
from tests.oauth2.conftest import REDIRECT, Registered, register_custom, register_third_party
from tests.oauth2.test_revocation import issued
from tests.oauth2.test_security import authorize_url, get_code, pkce, token

pytestmark = pytest.mark.asyncio

CUSTOM, THIRD_PARTY, PLATFORM = "custom", "third_party", "platform"
REVOKED, DEADLINE, DEACTIVATED = ("review_revoked", "review_deadline_passed",
                                  "installation_deactivated")
# Every way a caller is refused as a whole, by kind of caller. A platform resource server is
# not subject to review (no deadline) and has no installation; a third-party caller's
# deactivation is per plan (test_a_third_party_caller_sees_a_plan_while_installed_and_active).
REFUSALS = [(CUSTOM, REVOKED), (THIRD_PARTY, REVOKED), (PLATFORM, REVOKED),
            (CUSTOM, DEADLINE), (THIRD_PARTY, DEADLINE), (CUSTOM, DEACTIVATED)]
# The callers that obtain tokens (a platform resource server obtains none).
GRANTEES = [(kind, rule) for kind, rule in REFUSALS if kind != PLATFORM]
PLATFORM_BODY = {"name": "Resource server", "kind": "platform", "can_introspect": True,
                 "confidential": True}


@dataclass
class Caller:
    kind: str
    reg: Registered

    @property
    def creds(self) -> tuple[str, str]:
        return self.reg.client_id, self.reg.client_secret


@dataclass
class Scene:
    """Plan A (`plan`), plan B (`other_plan`), an operator, and a frozen clock."""

    app: Any
    client: httpx2.AsyncClient
    operator: dict[str, str]
    plan: PlanFixture
    other_plan: PlanFixture
    clock: FrozenClock

    async def caller(self, kind: str) -> Caller:
        """A custom integration of plan A, a third-party one installed in plan A (not in B),
        or a platform resource server; each may introspect."""
        if kind == CUSTOM:
            return Caller(kind, await register_custom(self.client, self.plan,
                                                      can_introspect=True))
        if kind == THIRD_PARTY:
            reg = await register_third_party(self.client, self.operator, can_introspect=True)
            await install(self.app, self.plan, reg)
            return Caller(kind, reg)
        return Caller(kind, await register_platform(self.client, self.operator))

    async def impose(self, rule: str, caller: Caller) -> datetime | None:
        """Refuse the caller as a whole by `rule`; the deadline the refusal names, if any."""
        if rule == REVOKED:
            assert (await review(self.client, self.operator, caller.reg,
                                 status="revoked")).status_code == 200
            return None
        if rule == DEACTIVATED:
            r = await self.client.post(f"{self.installation(caller)}/deactivate",
                                       headers=self.plan.admin.auth)
            assert r.status_code == 200 and r.json()["state"] == "deactivated", r.text
            return None
        if caller.kind == CUSTOM:  # judged third-party-operated, with a review deadline
            deadline = self.clock.now() + timedelta(days=7)
            r = await self.client.put(f"/v1/integrations/{caller.reg.id}/judgement", json={
                "deactivate_at": (self.clock.now() + timedelta(days=14)).isoformat(),
                "review_deadline": deadline.isoformat()}, headers=self.operator)
            assert r.status_code == 200, r.text
        else:
            r = await self.client.get(f"/v1/integrations/{caller.reg.id}", headers=self.operator)
            deadline = datetime.fromisoformat(r.json()["review_deadline"])
        self.clock.set(deadline + timedelta(days=1))
        return deadline

    async def lift(self, rule: str, caller: Caller) -> None:
        if rule == REVOKED:
            r = await review(self.client, self.operator, caller.reg, status="in_review",
                             deadline=(self.clock.now() + timedelta(days=30)).isoformat())
        elif rule == DEACTIVATED:
            r = await self.client.post(f"{self.installation(caller)}/reactivate",
                                       headers=self.plan.admin.auth)
        else:  # a limited-data exception
            r = await self.client.put(
                f"/v1/integrations/{caller.reg.id}/exception",
                json={"until": (self.clock.now() + timedelta(days=10)).isoformat()},
                headers=self.operator)
        assert r.status_code == 200, r.text

    def installation(self, caller: Caller) -> str:
        return f"/v1/plans/{self.plan.plan_id}/integrations/{caller.reg.id}"


@pytest.fixture
def scene(app, client, operator, plan, other_plan, clock) -> Scene:  # noqa: ANN001
    return Scene(app, client, operator, plan, other_plan, clock)


async def register_platform(client: httpx2.AsyncClient, operator: dict[str, str],
                            **extra: Any) -> Registered:  # noqa: ANN401
    r = await client.post("/v1/integrations", json={**PLATFORM_BODY, **extra}, headers=operator)
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == "platform"
    return Registered(r.json()["id"], r.json()["client_id"], r.json()["client_secret"])


def assert_refused(body: dict[str, str], rule: str, deadline: datetime | None) -> None:
    """`unauthorized_client`, its description naming the rule first, and the deadline."""
    assert body["error"] == "unauthorized_client", body
    assert body["error_description"].startswith(f"{rule}: "), body
    if deadline is not None:
        assert f"(deadline {deadline.isoformat()})" in body["error_description"], body


async def oauth_grant(client: httpx2.AsyncClient, browser: Browser, plan: PlanFixture,
                      reg: Registered) -> dict[str, Any]:
    """An access and refresh token for `reg`, by the plan admin's consent."""
    verifier, challenge = pkce()
    code = await get_code(browser, plan, reg, challenge)
    r = await token(client, reg, grant_type="authorization_code", code=code,
                    redirect_uri=REDIRECT, code_verifier=verifier)
    assert r.status_code == 200, r.text
    return r.json()


async def installed_in(client: httpx2.AsyncClient, plan: PlanFixture,
                       reg: Registered) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/plans/{plan.plan_id}/integrations", headers=plan.admin.auth)
    assert r.status_code == 200, r.text
    return [v for v in r.json() if v["client_id"] == reg.client_id]


# --- platform resource servers --------------------------------------------------------------

async def test_platform_resource_servers_are_registered_by_operators_as_introspectors_only(
        client, operator, plan) -> None:
    reg = await register_platform(client, operator)
    r = await client.get(f"/v1/integrations/{reg.id}", headers=operator)
    assert (r.json()["kind"], r.json()["can_introspect"], r.json()["plan_id"]) == \
        ("platform", True, None)
    assert r.json()["review_deadline"] is None  # not subject to review
    for wrong in ({"scopes": ["profile"]}, {"redirect_uris": [REDIRECT]},
                  {"can_introspect": False}, {"confidential": False}):
        r = await client.post("/v1/integrations", json={**PLATFORM_BODY, **wrong},
                              headers=operator)
        assert r.status_code == 422, (wrong, r.text)
    r = await client.post("/v1/integrations", json=PLATFORM_BODY, headers=plan.admin.auth)
    assert r.status_code == 403, r.text
    # A plan admin registers custom integrations only: `kind` is a field it may not send.
    for kind in ("platform", "third_party", "custom"):
        r = await client.post(f"/v1/plans/{plan.plan_id}/integrations",
                              json={"name": "Mine", "can_introspect": True, "kind": kind},
                              headers=plan.admin.auth)
        assert r.status_code == 422, (kind, r.text)


async def test_a_platform_resource_server_obtains_no_tokens(client, operator, plan) -> None:
    reg = await register_platform(client, operator)
    for form in ({"grant_type": "client_credentials"},
                 {"grant_type": "client_credentials", "plan_id": str(plan.plan_id)}):
        r = await token(client, reg, **form)
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "unauthorized_client"
        # Refused for what it is, not for being installed nowhere.
        assert "platform resource server" in r.json()["error_description"], r.text


async def test_a_platform_resource_server_has_no_review_deadline(scene, plan, other_plan,
                                                                 clock) -> None:
    caller = await scene.caller(PLATFORM)
    clock.advance(days=400)
    for p in (plan, other_plan):
        assert (await introspect(scene.client, caller.creds, p.admin.token))["active"] is True


# --- introspection rights -------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "sees_b"), [(CUSTOM, False), (THIRD_PARTY, False),
                                              (PLATFORM, True)])
async def test_each_kind_of_caller_introspects_the_plans_it_may_see(scene, plan, other_plan,
                                                                    kind, sees_b) -> None:
    caller = await scene.caller(kind)
    seen = await introspect(scene.client, caller.creds, plan.admin.token)
    assert (seen["active"], seen["plan_id"]) == (True, str(plan.plan_id))
    seen = await introspect(scene.client, caller.creds, other_plan.admin.token)
    if sees_b:
        assert (seen["active"], seen["plan_id"]) == (True, str(other_plan.plan_id))
    else:
        assert seen == {"active": False}


async def test_a_third_party_caller_sees_a_plan_while_installed_and_active_there(
        scene, client, plan, other_plan) -> None:
    caller = await scene.caller(THIRD_PARTY)  # installed in plan A only
    assert await introspect(client, caller.creds, other_plan.admin.token) == {"active": False}
    await install(scene.app, other_plan, caller.reg)
    assert (await introspect(client, caller.creds, other_plan.admin.token))["active"] is True

    b = f"/v1/plans/{other_plan.plan_id}/integrations/{caller.reg.id}"
    assert (await client.post(f"{b}/deactivate", headers=other_plan.admin.auth)).status_code \
        == 200
    assert await introspect(client, caller.creds, other_plan.admin.token) == {"active": False}
    # Deactivated in plan B only: it still sees plan A.
    assert (await introspect(client, caller.creds, plan.admin.token))["active"] is True
    assert (await client.post(f"{b}/reactivate", headers=other_plan.admin.auth)).status_code \
        == 200
    assert (await introspect(client, caller.creds, other_plan.admin.token))["active"] is True


# --- refused as a whole ---------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "rule"), REFUSALS)
async def test_a_refused_caller_cannot_introspect_until_the_refusal_is_lifted(
        scene, client, plan, kind, rule) -> None:
    caller = await scene.caller(kind)
    assert (await introspect(client, caller.creds, plan.admin.token))["active"] is True
    deadline = await scene.impose(rule, caller)

    r = await client.post("/oauth2/introspect", data={"token": plan.admin.token},
                          auth=caller.creds)
    assert r.status_code == 403, r.text
    assert set(r.json()) == {"error", "error_description"}
    assert_refused(r.json(), rule, deadline)

    await scene.lift(rule, caller)
    assert (await introspect(client, caller.creds, plan.admin.token))["active"] is True


@pytest.mark.parametrize(("kind", "rule"), GRANTEES)
async def test_a_refused_caller_obtains_no_token_by_any_grant(scene, client, browser, plan,
                                                              kind, rule) -> None:
    caller = await scene.caller(kind)
    pair = await oauth_grant(client, browser, plan, caller.reg)
    verifier, challenge = pkce()
    code = await get_code(browser, plan, caller.reg, challenge)  # not redeemed yet
    deadline = await scene.impose(rule, caller)

    for form in ({"grant_type": "client_credentials"},
                 {"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]},
                 {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                  "code_verifier": verifier}):
        r = await token(client, caller.reg, **form)
        assert r.status_code == 400, (form["grant_type"], r.text)
        assert_refused(r.json(), rule, deadline)

    # The refused refresh spent nothing: once the refusal is lifted, the same token refreshes.
    await scene.lift(rule, caller)
    r = await token(client, caller.reg, grant_type="refresh_token",
                    refresh_token=pair["refresh_token"])
    assert r.status_code == 200, r.text
    assert (await token(client, caller.reg, grant_type="client_credentials")).status_code == 200


@pytest.mark.parametrize(("kind", "rule"), REFUSALS)
async def test_a_refused_caller_revokes_nothing(scene, client, browser, plan, kind,
                                                rule) -> None:
    checker = await create_gateway_client(client, plan)
    caller = await scene.caller(kind)
    # Its own refresh token (no lifetime of its own, so it outlives a moved clock); a platform
    # resource server has none, so it tries a personal token.
    target = plan.admin.token if kind == PLATFORM else \
        (await oauth_grant(client, browser, plan, caller.reg))["refresh_token"]
    assert (await introspect(client, checker, target))["active"] is True
    deadline = await scene.impose(rule, caller)

    r = await client.post("/oauth2/revoke", data={"token": target}, auth=caller.creds)
    assert r.status_code == 400, r.text
    assert_refused(r.json(), rule, deadline)

    await scene.lift(rule, caller)
    assert (await introspect(client, checker, target))["active"] is True  # never revoked


@pytest.mark.parametrize(("kind", "rule"), GRANTEES)
async def test_a_refused_integration_is_sent_back_from_authorize(scene, browser, plan, kind,
                                                                 rule) -> None:
    caller = await scene.caller(kind)
    deadline = await scene.impose(rule, caller)
    _, challenge = pkce()
    back = await browser.authorize(authorize_url(caller.reg.client_id, challenge),
                                   plan.admin.email, plan.admin.password)
    params = redirect_params(back)
    assert back.headers["location"].startswith(REDIRECT + "?")
    assert "code" not in params and params["state"] == "xyz"
    assert_refused(params, rule, deadline)

    await scene.lift(rule, caller)
    back = await browser.authorize(authorize_url(caller.reg.client_id, challenge),
                                   plan.admin.email, plan.admin.password)
    assert "code" in redirect_params(back)


@pytest.mark.parametrize("rule", [REVOKED, DEADLINE])
async def test_an_admin_cannot_install_a_refused_third_party_integration(
        scene, client, browser, operator, plan, rule) -> None:
    caller = Caller(THIRD_PARTY, await register_third_party(client, operator))  # not installed
    deadline = await scene.impose(rule, caller)
    _, challenge = pkce()
    back = await browser.authorize(authorize_url(caller.reg.client_id, challenge),
                                   plan.admin.email, plan.admin.password)
    assert_refused(redirect_params(back), rule, deadline)
    assert await installed_in(client, plan, caller.reg) == []

    await scene.lift(rule, caller)
    back = await browser.authorize(authorize_url(caller.reg.client_id, challenge),
                                   plan.admin.email, plan.admin.password)
    assert "code" in redirect_params(back)
    [view] = await installed_in(client, plan, caller.reg)
    assert view["state"] == "active"


# --- revocation of others' tokens -----------------------------------------------------------

@pytest.mark.parametrize("kind", [CUSTOM, THIRD_PARTY, PLATFORM])
async def test_a_caller_revokes_only_its_own_tokens(scene, client, plan, other_plan,
                                                    kind) -> None:
    caller = await scene.caller(kind)
    in_a = await create_gateway_client(client, plan)
    in_b = await create_gateway_client(client, other_plan)
    foreign = [(await issued(client, in_a), in_a),
               (plan.admin.token, in_a), (other_plan.admin.token, in_b)]
    for target, checker in foreign:
        r = await client.post("/oauth2/revoke", data={"token": target}, auth=caller.creds)
        assert r.status_code == 400, r.text
        assert r.json() == {"error": "invalid_grant",
                            "error_description": "the token was not issued to this client"}
        assert (await introspect(client, checker, target))["active"] is True
    # Unknown or malformed: nobody's token, and RFC 7009 §2.2 answers 200.
    for nobody in (credentials.generate(SecretKind.access), "nonsense"):
        r = await client.post("/oauth2/revoke", data={"token": nobody}, auth=caller.creds)
        assert (r.status_code, r.json()) == (200, {}), r.text


async def test_a_third_party_caller_revokes_nothing_in_a_plan_where_it_is_deactivated(
        scene, client, plan) -> None:
    checker = await create_gateway_client(client, plan)
    caller = await scene.caller(THIRD_PARTY)
    own = await machine_token(client, caller.reg)
    await scene.impose(DEACTIVATED, caller)  # in plan A, the plan of its token
    r = await client.post("/oauth2/revoke", data={"token": own}, auth=caller.creds)
    assert r.status_code == 400, r.text
    assert_refused(r.json(), DEACTIVATED, None)

    await scene.lift(DEACTIVATED, caller)
    assert (await introspect(client, checker, own))["active"] is True  # never revoked
    r = await client.post("/oauth2/revoke", data={"token": own}, auth=caller.creds)
    assert (r.status_code, r.json()) == (200, {}), r.text
    assert await introspect(client, checker, own) == {"active": False}
