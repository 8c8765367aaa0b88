from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from app import credentials
from app.credentials import SecretKind
from app.db import make_sessionmaker, session_scope
from app.operators.models import Operator
from tests.oauth2.browser import Browser

REDIRECT = "https://app.example.com/callback"


@dataclass
class Registered:
    id: str
    client_id: str
    client_secret: str | None
    redirect_uri: str = REDIRECT


@pytest.fixture
async def operator(database, clock) -> dict[str, str]:
    secret = credentials.generate(SecretKind.operator)
    async with session_scope(make_sessionmaker(database.engine)) as s:
        s.add(Operator(id=uuid.uuid4(), email=f"ops-{uuid.uuid4().hex[:8]}@example.com",
                       token_digest=credentials.digest(secret),
                       token_hint=credentials.hint(secret), created_at=clock.now()))
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def browser(app):  # noqa: ANN001, ANN201
    b = Browser(app)
    yield b
    await b.close()


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
