"""Hostile input gets a 4xx in the API's error shape, never a 5xx (rule 12): instants that are
valid ISO 8601 but leave the range of a UTC column, on every endpoint that stores one."""

from __future__ import annotations

import pytest

from tests.oauth2.conftest import register_custom, register_third_party

pytestmark = pytest.mark.asyncio

OUT_OF_RANGE = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00"]


@pytest.mark.parametrize("instant", OUT_OF_RANGE)
async def test_instants_a_utc_column_cannot_hold_are_a_422(client, plan, operator,
                                                           instant) -> None:
    tp = await register_third_party(client, operator)
    custom = await register_custom(client, plan)
    calls = [
        ("PUT", f"/v1/integrations/{tp.id}/exception", {"until": instant}),
        ("PUT", f"/v1/integrations/{tp.id}/review", {"deadline": instant}),
        ("PUT", f"/v1/integrations/{custom.id}/judgement", {"deactivate_at": instant}),
        ("PUT", f"/v1/integrations/{custom.id}/judgement",
         {"deactivate_at": "2030-01-01T00:00:00Z", "review_deadline": instant}),
    ]
    for method, path, body in calls:
        r = await client.request(method, path, json=body, headers=operator)
        assert r.status_code == 422, (path, body, r.status_code, r.text)
        assert r.json()["error"] == "invalid_request"
        assert instant not in r.text  # validation details never echo the input


LONE_SURROGATE = '"\\ud800"'  # valid JSON, no valid Unicode


@pytest.mark.parametrize("field", ["name", "redirect_uris", "scopes"])
async def test_json_text_that_is_not_unicode_is_a_422_and_stores_nothing(client, plan,
                                                                          field) -> None:
    """JSON may spell a lone surrogate, which no column, encoder or answer holds: refused as a
    whole, wherever it is in the body (a field, a list), and nothing is written."""
    value = LONE_SURROGATE if field == "name" else f"[{LONE_SURROGATE}]"
    rest = {"name": '"ok"', "redirect_uris": '["https://app.example/cb"]', "scopes": "[]"}
    rest[field] = value
    body = "{" + ", ".join(f'"{k}": {v}' for k, v in rest.items()) + "}"
    before = (await client.get(f"/v1/plans/{plan.plan_id}/integrations",
                               headers=plan.admin.auth)).json()
    r = await client.post(f"/v1/plans/{plan.plan_id}/integrations", content=body,
                          headers={**plan.admin.auth, "content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_request"
    after = (await client.get(f"/v1/plans/{plan.plan_id}/integrations",
                              headers=plan.admin.auth)).json()
    assert after == before


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/me/tokens", '{"name": "\\udfff-key"}'),
    ("/v1/plans/{plan}/users",
     '{"email": "x\\ud800@example.com", "name": "X", "password": "long enough"}'),
    ("/v1/plans/{plan}/token-expiration", '{"value": 3, "unit": "\\ud800"}'),
])
async def test_lone_surrogates_on_every_body_are_a_422(client, plan, path, body) -> None:
    r = await client.request("PUT" if "expiration" in path else "POST",
                             path.format(plan=plan.plan_id), content=body,
                             headers={**plan.admin.auth, "content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_request"
