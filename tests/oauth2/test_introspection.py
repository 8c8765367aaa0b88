"""RFC 7662 introspection: authenticated callers, truthful answers, nothing for dead tokens."""

from __future__ import annotations

import pytest

from tests.helpers import create_gateway_client, introspect, set_period

pytestmark = pytest.mark.asyncio


async def test_active_personal_token_answer(client, plan, clock) -> None:
    creds = await create_gateway_client(client, plan)
    user = await plan.add_user()
    answer = await introspect(client, creds, user.token)
    assert answer == {
        "active": True, "scope": "", "sub": str(user.user_id), "token_type": "Bearer",
        "iat": int(clock.now().timestamp()), "plan_id": str(plan.plan_id),
        "token_kind": "personal",
    }
    await set_period(client, plan, 2, "hours")
    answer = await introspect(client, creds, user.token)
    assert answer["exp"] == int(clock.now().timestamp()) + 7200


@pytest.mark.parametrize("token", ["", "nonsense", "tsp_" + "A" * 49,
                                   "Bearer xyz", "x" * 5000])
async def test_malformed_tokens_are_inactive(client, plan, token) -> None:
    creds = await create_gateway_client(client, plan)
    if token == "":
        r = await client.post("/oauth2/introspect", data={"token": ""}, auth=creds)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"
        return
    assert await introspect(client, creds, token) == {"active": False}


async def test_unknown_revoked_expired_tokens_are_inactive(client, plan, clock) -> None:
    from app import credentials
    from app.credentials import SecretKind

    creds = await create_gateway_client(client, plan)
    unknown = credentials.generate(SecretKind.personal)
    assert await introspect(client, creds, unknown) == {"active": False}
    user = await plan.add_user()
    await set_period(client, plan, 1, "minutes")
    clock.advance(minutes=1)
    assert await introspect(client, creds, user.token) == {"active": False}


async def test_caller_must_authenticate(client, plan) -> None:
    client_id, secret = await create_gateway_client(client, plan)
    token = plan.admin.token
    cases = [
        {},  # no credentials
        {"auth": (client_id, "wrong-secret")},
        {"auth": ("no-such-client", secret)},
    ]
    for extra in cases:
        r = await client.post("/oauth2/introspect", data={"token": token}, **extra)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "invalid_client"
        assert r.headers["www-authenticate"].startswith("Basic")
        assert "active" not in r.json()
    # client_secret_post works too
    r = await client.post("/oauth2/introspect", data={"token": token, "client_id": client_id,
                                                      "client_secret": secret})
    assert r.status_code == 200 and r.json()["active"] is True


async def test_client_without_introspection_right_is_refused(client, plan) -> None:
    creds = await create_gateway_client(client, plan, can_introspect=False)
    r = await client.post("/oauth2/introspect", data={"token": plan.admin.token}, auth=creds)
    assert r.status_code == 403 and r.json()["error"] == "unauthorized_client"


async def test_a_plan_client_sees_nothing_of_another_plan(client, plan, other_plan) -> None:
    creds = await create_gateway_client(client, plan)
    assert await introspect(client, creds, other_plan.admin.token) == {"active": False}


async def test_wrong_content_type_and_repeated_parameters(client, plan) -> None:
    creds = await create_gateway_client(client, plan)
    r = await client.post("/oauth2/introspect", json={"token": plan.admin.token}, auth=creds)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await client.post("/oauth2/introspect", content=b"token=a&token=b", auth=creds,
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and "repeated" in r.json()["error_description"]


async def test_form_body_is_bounded(client, plan) -> None:
    creds = await create_gateway_client(client, plan)
    form = {"content-type": "application/x-www-form-urlencoded"}
    r = await client.post("/oauth2/introspect", content=b"token=" + b"a" * (64 * 1024),
                          auth=creds, headers=form)
    assert r.status_code == 413 and r.json()["error"] == "invalid_request"
    r = await client.post("/oauth2/token", content="&".join(f"p{i}=1" for i in range(60)),
                          auth=creds, headers=form)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await client.post("/oauth2/introspect", content=b"token=x&x=%C3%A9", auth=creds,
                          headers=form)
    assert r.status_code == 200 and r.json() == {"active": False}
