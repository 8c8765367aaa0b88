"""Answers that carry a secret or token data are never stored by a cache (RFC 9111 §5.2.2.5),
and no page of Tessera can be framed by another site (clickjacking), the API documentation
included."""

from __future__ import annotations

import pytest

from tests.oauth2.conftest import register_custom

pytestmark = pytest.mark.asyncio


async def test_every_answer_with_a_secret_or_token_data_is_no_store(client, plan,
                                                                    operator) -> None:
    custom = await register_custom(client, plan)
    base = f"/v1/plans/{plan.plan_id}"
    secrets = [
        await client.post("/v1/me/tokens", json={}, headers=plan.admin.auth),
        await client.post(f"{base}/integrations", json={"name": "x"}, headers=plan.admin.auth),
        await client.post(f"{base}/integrations/{custom.id}/tokens", json={},
                          headers=plan.admin.auth),
        await client.post("/v1/integrations", json={"name": "tp"}, headers=operator),
    ]
    for r in secrets:
        assert r.status_code == 201, r.text
        assert r.headers["cache-control"] == "no-store", r.request.url
    data = [
        await client.get("/v1/me", headers=plan.admin.auth),
        await client.get("/v1/me/tokens", headers=plan.admin.auth),
        await client.get(f"{base}/tokens", headers=plan.admin.auth),
        await client.get(f"{base}/audit", headers=plan.admin.auth),
        await client.get("/v1/me"),  # a refusal too
    ]
    for r in data:
        assert r.headers["cache-control"] == "no-store", r.request.url
    # The public metadata keeps its own, short, caching.
    r = await client.get("/.well-known/oauth-authorization-server")
    assert r.headers["cache-control"] == "public, max-age=300"


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/oauth2/authorize"])
async def test_no_page_can_be_framed(client, path) -> None:
    r = await client.get(path)
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
