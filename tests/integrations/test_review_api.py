"""Integration review over HTTP: its lifecycle and its enforcement at every check point."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.helpers import create_gateway_client, introspect, set_period
from tests.oauth2.browser import Browser, redirect_params
from tests.oauth2.conftest import register_custom, register_third_party
from tests.oauth2.test_security import authorize_url, pkce

pytestmark = pytest.mark.asyncio

STEPS = {"business_verification": True, "terms_accepted": True, "review": True}


async def install(app, plan, tp) -> None:  # noqa: ANN001
    """A plan admin allows the integration on the consent screen, which installs it."""
    browser = Browser(app)
    try:
        _, challenge = pkce()
        back = await browser.authorize(authorize_url(tp.client_id, challenge),
                                       plan.admin.email, plan.admin.password)
        assert "code" in redirect_params(back)
    finally:
        await browser.close()


async def machine_token(client, reg) -> str:  # noqa: ANN001
    r = await client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                          auth=(reg.client_id, reg.client_secret))
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


async def review(client, operator, reg, **body):  # noqa: ANN001, ANN201
    return await client.put(f"/v1/integrations/{reg.id}/review", json=body, headers=operator)


async def test_registration_starts_not_reviewed_with_a_deadline(client, operator, plan,
                                                                clock) -> None:
    tp = await register_third_party(client, operator)
    r = await client.get(f"/v1/integrations/{tp.id}", headers=operator)
    body = r.json()
    assert body["review_status"] == "not_reviewed"
    assert body["review_deadline"].startswith((clock.now() + timedelta(days=30)).date()
                                              .isoformat())
    assert body["missing_steps"] == ["business_verification", "terms_accepted", "review"]
    # Only operators register or review.
    r = await client.post("/v1/integrations", json={"name": "x"}, headers=plan.admin.auth)
    assert r.status_code == 403 and r.json()["error"] == "operator_required"
    assert (await review(client, plan.admin.auth, tp, status="approved")).status_code == 403


async def test_approval_requires_the_recorded_steps(client, operator) -> None:
    limited = await register_third_party(client, operator)
    r = await review(client, operator, limited, status="approved")
    assert r.status_code == 422 and r.json()["error"] == "review_incomplete"
    assert r.json()["missing"] == ["business_verification", "terms_accepted", "review"]
    r = await review(client, operator, limited, status="approved", steps=STEPS)
    assert r.status_code == 200 and r.json()["review_status"] == "approved"

    extended = await register_third_party(client, operator, data_access="extended")
    r = await review(client, operator, extended, status="approved", steps=STEPS)
    assert r.status_code == 422
    assert r.json()["missing"] == ["penetration_test", "security_questionnaire"]
    # The refused approval recorded nothing: every step is recorded now, status unchanged.
    r = await review(client, operator, extended, steps={**STEPS, "penetration_test": True,
                                                        "security_questionnaire": True})
    assert r.status_code == 200 and r.json()["review_status"] == "not_reviewed"
    r = await review(client, operator, extended, status="approved")
    assert r.json()["review_status"] == "approved"
    r = await client.put(f"/v1/integrations/{extended.id}/exception",
                         json={"until": "2030-01-01T00:00:00Z"}, headers=operator)
    assert r.status_code == 422 and r.json()["error"] == "exception_not_allowed"


async def test_revocation_is_enforced_at_every_check_point_at_once(app, client, operator, plan,
                                                                   clock) -> None:
    gateway = await create_gateway_client(client, plan)
    tp = await register_third_party(client, operator)
    await install(app, plan, tp)
    token = await machine_token(client, tp)
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await introspect(client, gateway, token))["active"] is True
    assert (await client.get("/v1/gateway/check", headers=bearer)).status_code == 200

    assert (await review(client, operator, tp, status="revoked")).status_code == 200
    r = await client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                          auth=(tp.client_id, tp.client_secret))
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"
    assert "review_revoked" in r.json()["error_description"]
    assert await introspect(client, gateway, token) == {"active": False}
    r = await client.get(f"/v1/plans/{plan.plan_id}/tokens", headers=bearer)
    assert r.status_code == 403 and r.json()["rule"] == "review_revoked"
    r = await client.get("/v1/gateway/check", headers=bearer)
    assert r.status_code == 403

    # Lifting the refusal brings back tokens that are neither expired nor revoked.
    assert (await review(client, operator, tp, status="in_review")).status_code == 200
    assert (await introspect(client, gateway, token))["active"] is True
    listed = await client.get(f"/v1/plans/{plan.plan_id}/tokens?kind=access",
                              headers=plan.admin.auth)
    [row] = [t for t in listed.json()["items"] if t["client_id"] == tp.client_id]
    assert (await client.delete(f"/v1/plans/{plan.plan_id}/tokens/{row['id']}",
                                headers=plan.admin.auth)).status_code == 204
    await review(client, operator, tp, status="revoked")
    await review(client, operator, tp, status="in_review")
    assert await introspect(client, gateway, token) == {"active": False}


async def test_deadline_and_exception(app, client, operator, plan, clock) -> None:
    gateway = await create_gateway_client(client, plan)
    tp = await register_third_party(client, operator)
    await install(app, plan, tp)
    token = await machine_token(client, tp)
    clock.advance(days=31)
    assert await introspect(client, gateway, token) == {"active": False}
    r = await client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                          auth=(tp.client_id, tp.client_secret))
    assert r.json()["error"] == "unauthorized_client"
    assert "review_deadline_passed" in r.json()["error_description"]
    assert "deadline" in r.json()["error_description"]

    await plan.admin.renew(client)
    status = await client.get(f"/v1/plans/{plan.plan_id}/integrations",
                              headers=plan.admin.auth)
    [view] = [v for v in status.json() if v["client_id"] == tp.client_id]
    assert view["access"]["rule"] == "review_deadline_passed" and view["needs_attention"]

    until = (clock.now() + timedelta(days=10)).isoformat()
    r = await client.put(f"/v1/integrations/{tp.id}/exception", json={"until": until},
                         headers=operator)
    assert r.status_code == 200
    token = await machine_token(client, tp)  # the old one's own hour is long over
    assert (await introspect(client, gateway, token))["active"] is True
    # The platform may also move the deadline.
    await client.delete(f"/v1/integrations/{tp.id}/exception", headers=operator)
    assert await introspect(client, gateway, token) == {"active": False}
    await review(client, operator, tp, deadline=(clock.now() + timedelta(days=5)).isoformat())
    assert (await introspect(client, gateway, token))["active"] is True


async def test_judged_custom_integration_lifecycle(client, operator, plan, clock) -> None:
    gateway = await create_gateway_client(client, plan)
    custom = await register_custom(client, plan)
    token = await machine_token(client, custom)
    deactivate_at = clock.now() + timedelta(days=14)
    r = await client.put(f"/v1/integrations/{custom.id}/judgement",
                         json={"deactivate_at": deactivate_at.isoformat()}, headers=operator)
    assert r.status_code == 200 and r.json()["judged_third_party"] is True
    # Treated as third-party from now on: works until the deadline, unapproved.
    assert (await introspect(client, gateway, token))["active"] is True

    views = (await client.get(f"/v1/plans/{plan.plan_id}/integrations",
                              headers=plan.admin.auth)).json()
    view = next(v for v in views if v["client_id"] == custom.client_id)
    assert view["needs_attention"] and {"confirm_keep", "report_misjudgement"} <= set(
        view["actions"])
    assert views[0]["needs_attention"]  # those needing attention come first

    r = await client.post(f"/v1/plans/{plan.plan_id}/integrations/{custom.id}/reports",
                          json={"message": "We wrote and run this ourselves."},
                          headers=plan.admin.auth)
    assert r.status_code == 201
    reports = (await client.get(f"/v1/integrations/{custom.id}/reports",
                                headers=operator)).json()
    assert reports[0]["message"] == "We wrote and run this ourselves."

    base = f"/v1/plans/{plan.plan_id}/integrations/{custom.id}"
    r = await client.post(f"{base}/deactivate", headers=plan.admin.auth)
    assert r.json()["state"] == "deactivated"
    assert await introspect(client, gateway, token) == {"active": False}
    r = await client.post(f"{base}/reactivate", headers=plan.admin.auth)
    assert r.status_code == 200 and r.json()["state"] == "active"
    assert (await introspect(client, gateway, token))["active"] is True

    await client.post(f"{base}/deactivate", headers=plan.admin.auth)
    clock.set(deactivate_at + timedelta(seconds=1))
    await plan.admin.renew(client)
    r = await client.post(f"{base}/reactivate", headers=plan.admin.auth)
    assert r.status_code == 409 and r.json()["error"] == "reactivation_deadline_passed"
    assert r.json()["deadline"]


async def test_why_is_my_token_not_active(client, operator, plan, clock) -> None:
    user = await plan.add_user()
    await set_period(client, plan, 30, "days")
    clock.advance(days=31)
    await plan.admin.renew(client)
    tokens = (await client.get(f"/v1/plans/{plan.plan_id}/tokens?user_id={user.user_id}",
                               headers=plan.admin.auth)).json()["items"]
    r = await client.get(f"/v1/plans/{plan.plan_id}/tokens/{tokens[0]['id']}/status",
                         headers=plan.admin.auth)
    body = r.json()
    assert body["status"] == "expired" and body["period"] == "30 days"
    assert "plan's expiration period of 30 days" in body["explanation"]

    fresh = await plan.add_user()
    mine = (await client.get("/v1/me/tokens", headers=fresh.auth)).json()["items"][0]
    await client.delete(f"/v1/plans/{plan.plan_id}/tokens/{mine['id']}",
                        headers=plan.admin.auth)
    r = await client.get(f"/v1/plans/{plan.plan_id}/tokens/{mine['id']}/status",
                         headers=plan.admin.auth)
    body = r.json()
    assert body["status"] == "revoked" and body["revoked_by"] == f"user:{plan.admin.user_id}"

    custom = await register_custom(client, plan)
    issued = (await client.post(f"/v1/plans/{plan.plan_id}/integrations/{custom.id}/tokens",
                                json={}, headers=plan.admin.auth)).json()
    await review(client, operator, custom, status="revoked")
    r = await client.get(f"/v1/plans/{plan.plan_id}/tokens/{issued['id']}/status",
                         headers=plan.admin.auth)
    assert r.json()["status"] == "integration_refused" and r.json()["rule"] == "review_revoked"


async def test_audit_is_newest_first_paginated_and_tenant_scoped(client, operator, plan,
                                                                 other_plan, clock) -> None:
    for value in (1, 2, 3):
        clock.advance(seconds=1)
        await set_period(client, plan, value, "years")
    r = await client.get(f"/v1/plans/{plan.plan_id}/audit?limit=2", headers=plan.admin.auth)
    page = r.json()
    assert [e["detail"]["period"] for e in page["items"]] == ["3 years", "2 years"]
    r = await client.get(f"/v1/plans/{plan.plan_id}/audit?limit=2&cursor={page['next_cursor']}",
                         headers=plan.admin.auth)
    assert r.json()["items"][0]["detail"]["period"] == "1 year"
    assert (await client.get(f"/v1/plans/{plan.plan_id}/audit?cursor=zzz",
                             headers=plan.admin.auth)).status_code == 422

    custom = await register_custom(client, plan)
    for path in ("audit", "integrations"):
        r = await client.get(f"/v1/plans/{plan.plan_id}/{path}", headers=other_plan.admin.auth)
        assert r.status_code == 404
    r = await client.post(f"/v1/plans/{other_plan.plan_id}/integrations/{custom.id}/deactivate",
                          headers=other_plan.admin.auth)
    assert r.status_code == 404
    r = await client.post(f"/v1/plans/{plan.plan_id}/integrations/{custom.id}/deactivate",
                          headers=other_plan.admin.auth)
    assert r.status_code == 404
