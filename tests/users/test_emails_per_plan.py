"""Emails are unique per plan (rule 9): creating a user tells a plan nothing of another plan's
users, and one email may have an account in several plans. A login names an account by its
email (its oldest account), or by `<plan id>/email`; either way one password hash is checked."""

from __future__ import annotations

import pytest

from tests.oauth2.browser import Browser, redirect_params
from tests.oauth2.conftest import register_custom
from tests.oauth2.test_security import authorize_url, pkce

pytestmark = pytest.mark.asyncio

PASSWORD = "correct horse battery staple"


async def create(client, plan, email: str, password: str = PASSWORD):  # noqa: ANN001, ANN201
    return await client.post(f"/v1/plans/{plan.plan_id}/users", headers=plan.admin.auth,
                             json={"email": email, "name": "Someone", "password": password})


async def test_another_plans_user_cannot_be_told_apart(client, plan, other_plan) -> None:
    """The admin of plan B creating a user with the email of plan A's member gets what it gets
    for an email nobody uses: 201. Only its own plan's users conflict."""
    member = await plan.add_user()
    taken_elsewhere = await create(client, other_plan, member.email)
    unused = await create(client, other_plan, "nobody-yet@example.com")
    assert (taken_elsewhere.status_code, unused.status_code) == (201, 201), taken_elsewhere.text
    assert taken_elsewhere.json().keys() == unused.json().keys()
    again = await create(client, other_plan, member.email)
    assert again.status_code == 409 and again.json()["error"] == "email_taken"


async def test_a_shared_email_signs_in_to_each_account(client, plan, other_plan,
                                                       clock) -> None:
    member = await plan.add_user()  # the oldest account of this email
    clock.advance(seconds=1)
    r = await create(client, other_plan, member.email, "another long password")
    assert r.status_code == 201
    second_id = r.json()["id"]
    # Bare email: the oldest account, with its own password only.
    r = await client.post("/v1/me/tokens", json={}, auth=(member.email, member.password))
    assert r.status_code == 201 and r.json()["user_id"] == str(member.user_id)
    r = await client.post("/v1/me/tokens", json={}, auth=(member.email, "another long password"))
    assert r.status_code == 401
    # Qualified by its plan: the other one.
    login = f"{other_plan.plan_id}/{member.email}"
    r = await client.post("/v1/me/tokens", json={}, auth=(login, "another long password"))
    assert r.status_code == 201 and r.json()["user_id"] == second_id
    r = await client.post("/v1/me/tokens", json={}, auth=(login, member.password))
    assert r.status_code == 401
    for bad in (f"not-a-uuid/{member.email}", f"{plan.plan_id}/nobody@example.com", "/"):
        r = await client.post("/v1/me/tokens", json={}, auth=(bad, member.password))
        assert r.status_code == 401, bad


async def test_the_consent_screen_signs_in_with_a_qualified_login(app, client, plan,
                                                                  other_plan, clock) -> None:
    member = await plan.add_user()
    clock.advance(seconds=1)
    r = await create(client, other_plan, member.email, "another long password")
    assert r.status_code == 201
    app_of_b = await register_custom(client, other_plan)
    browser = Browser(app)
    try:
        _, challenge = pkce()
        back = await browser.authorize(authorize_url(app_of_b.client_id, challenge),
                                       f"{other_plan.plan_id}/{member.email}",
                                       "another long password")
        assert "code" in redirect_params(back)
    finally:
        await browser.close()
