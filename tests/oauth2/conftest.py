from __future__ import annotations

from dataclasses import dataclass

import pytest

REDIRECT = "https://app.example.com/callback"


@dataclass
class Registered:
    id: str
    client_id: str
    client_secret: str | None
    redirect_uri: str = REDIRECT


async def register_custom(client, plan, **extra) -> Registered:  # noqa: ANN001
    body = {"name": "In-house app", "redirect_uris": [REDIRECT],
            "scopes": ["profile", "tokens:read", "data:read"], "confidential": True, **extra}
    r = await client.post(f"/v1/plans/{plan.plan_id}/integrations", json=body,
                          headers=plan.admin.auth)
    assert r.status_code == 201, r.text
    j = r.json()
    return Registered(j["id"], j["client_id"], j["client_secret"])


async def register_third_party(client, operator, **extra) -> Registered:  # noqa: ANN001
    body = {"name": "Acme Analytics", "redirect_uris": [REDIRECT],
            "scopes": ["profile", "data:read", "data:write"], "confidential": True, **extra}
    r = await client.post("/v1/integrations", json=body, headers=operator)
    assert r.status_code == 201, r.text
    j = r.json()
    return Registered(j["id"], j["client_id"], j["client_secret"])


@pytest.fixture
async def custom(client, plan) -> Registered:  # noqa: ANN001
    return await register_custom(client, plan)
