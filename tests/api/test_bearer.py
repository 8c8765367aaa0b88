"""The management API's bearer principal (`app.auth.dependencies.principal_from_token`): a
token found in the cache skips the format check (a stored token is well formed) but not the
rule on its kind; one not found is checked on its way to the database."""

from __future__ import annotations

import uuid

import pytest

from app import credentials
from app.credentials import SecretKind
from tests.integrations.test_token_client_cache import serve_cache

pytestmark = pytest.mark.asyncio

NOT_BEARER = "this kind of token is not a bearer credential"


async def test_a_refresh_token_is_no_bearer_credential_cached_or_not(app, client, plan) -> None:
    serve_cache(app)
    cache = app.state.token_cache
    r = await client.get("/v1/me", headers=plan.admin.auth)
    assert r.status_code == 200, r.text
    mine = cache.get(credentials.digest(plan.admin.token))
    assert mine is not None  # the admin's token is cached now
    secret = credentials.generate(SecretKind.refresh)
    headers = {"Authorization": f"Bearer {secret}"}
    r = await client.get("/v1/me", headers=headers)
    assert (r.status_code, r.json()["message"]) == (401, NOT_BEARER)
    # The same refresh token as the cache would hold it once introspected.
    refresh = mine._replace(kind="refresh", id=uuid.uuid4())
    cache.put(credentials.digest(secret), refresh, cache.generation)
    assert cache.get(credentials.digest(secret)) is refresh
    r = await client.get("/v1/me", headers=headers)
    assert (r.status_code, r.json()["message"]) == (401, NOT_BEARER)


async def test_a_cached_token_skips_the_format_check_only(app, client, plan,
                                                           monkeypatch) -> None:
    serve_cache(app)
    r = await client.get("/v1/me", headers=plan.admin.auth)
    assert r.status_code == 200, r.text
    checked = []
    real = credentials.kind_of
    monkeypatch.setattr(credentials, "kind_of", lambda s: checked.append(s) or real(s))
    r = await client.get("/v1/me", headers=plan.admin.auth)
    assert r.status_code == 200 and checked == []  # answered from the cache
    broken = plan.admin.token[:-1] + ("A" if plan.admin.token[-1] != "A" else "B")
    r = await client.get("/v1/me", headers={"Authorization": f"Bearer {broken}"})
    assert r.status_code == 401 and "malformed" in r.json()["message"]
    assert checked == [broken]
