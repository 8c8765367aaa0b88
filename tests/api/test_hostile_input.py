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
