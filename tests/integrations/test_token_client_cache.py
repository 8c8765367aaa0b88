"""The token endpoint answers client authentication from the token cache (as introspection
does): a wrong secret is still refused, and a review change takes effect on the next call."""

from __future__ import annotations

import time

import pytest

from tests.integrations.test_review_api import STEPS, install, review
from tests.oauth2.conftest import register_third_party

pytestmark = pytest.mark.asyncio


def serve_cache(app) -> None:  # noqa: ANN001
    """No listener runs under the ASGI test transport: let the cache answer for the test (an
    in-process `cache.changed` evicts at once, which is what is tested here)."""
    app.state.token_cache.heartbeat(time.monotonic() + 3600)


async def token(client, reg, secret: str | None = None):  # noqa: ANN001, ANN201
    return await client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                              auth=(reg.client_id, secret or reg.client_secret))


async def test_cached_client_wrong_secret_and_revoked_review(app, client, operator,
                                                             plan) -> None:
    tp = await register_third_party(client, operator)
    await install(app, plan, tp)
    serve_cache(app)
    cache = app.state.token_cache
    assert (await token(client, tp)).status_code == 200
    if cache.serving:
        assert len(cache._clients) == 1  # the second call is answered from the cache
    assert (await token(client, tp)).status_code == 200
    r = await token(client, tp, secret=tp.client_secret + "x")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = await client.post("/oauth2/token", data={"grant_type": "client_credentials",
                                                 "client_id": tp.client_id,
                                                 "client_secret": "wrong"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"

    assert (await review(client, operator, tp, status="revoked")).status_code == 200
    r = await token(client, tp)
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"
    assert "review_revoked" in r.json()["error_description"]
    assert (await review(client, operator, tp, status="approved",
                         steps=STEPS)).status_code == 200
    assert (await token(client, tp)).status_code == 200
