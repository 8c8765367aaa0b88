"""Bad input gets a 4xx in one JSON shape, never a 500."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.asyncio


async def test_unknown_route_and_method(client, plan) -> None:
    r = await client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json() == {"error": "not_found",
                                                 "message": "no such resource"}
    r = await client.patch(f"/v1/plans/{plan.plan_id}/token-expiration",
                           headers=plan.admin.auth)
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


async def test_malformed_json_and_wrong_content_type(client, plan) -> None:
    url = f"/v1/plans/{plan.plan_id}/token-expiration"
    r = await client.put(url, content=b'{"value": 1,', headers={
        **plan.admin.auth, "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "malformed_json"
    r = await client.put(url, content=b"value=1&unit=days", headers={
        **plan.admin.auth, "content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"


async def test_bad_path_parameter_and_authorization_header(client, plan) -> None:
    r = await client.get("/v1/plans/not-a-uuid/token-expiration", headers=plan.admin.auth)
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    for header in ("Basic", "Bearer", "Token abc", "Bearer " + "x" * 3000):
        r = await client.get("/v1/me/tokens", headers={"Authorization": header})
        assert r.status_code == 401, header
        assert r.json()["error"] == "unauthorized"


async def test_validation_errors_never_echo_secrets(client, plan) -> None:
    body = {"email": "not-an-email", "name": "x", "password": "hunter2-secret-value"}
    r = await client.post(f"/v1/plans/{plan.plan_id}/users", json=body, headers=plan.admin.auth)
    assert r.status_code == 422
    assert "hunter2" not in r.text


async def test_openapi_is_served(client) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/v1/plans/{plan_id}/token-expiration" in paths
    assert "/v1/me/tokens" in paths


async def test_gateway_check_ignores_a_forwarded_body(client, plan) -> None:
    """Envoy forwards the original method and body; the check answers from headers alone."""
    r = await client.post("/v1/gateway/check", content=b"<xml>original upload</xml>",
                          headers={**plan.admin.auth, "content-type": "application/xml"})
    assert r.status_code == 200, r.text
    r = await client.put("/v1/gateway/check/orders/7", content=b"a=b",
                         headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 401
