"""A real nginx (`auth_request`, the configuration of docs/gateway.md) in front of a small
upstream, asking a real Tessera served by its CLI on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx2
import pytest

from tests.conftest import make_plan, require
from tests.gateway.conftest import bearer, expired_access_token, real_clock, revoke_review
from tests.gateway.processes import NGINX, echo_upstream, nginx, tessera

pytestmark = pytest.mark.asyncio


async def refused_within(http: httpx2.AsyncClient, path: str, token: str, status: int,
                         bound: float = 1.0) -> httpx2.Response:
    """Polls until nginx refuses with `status`, for at most the stated bound. A change made by
    another process reaches the server's cache within the bound; and even a change made through
    the server itself may be answered before it is committed (the request's session commits in
    a yield dependency, which FastAPI runs after the response is sent)."""
    deadline = time.monotonic() + bound + 0.5  # the bound plus scheduling slack on a busy box
    while True:
        r = await http.get(path, headers=bearer(token))
        if r.status_code == status or time.monotonic() > deadline:
            # Once refused, refused for good (and the upstream is not asked).
            again = await http.get("/api/refused", headers=bearer(token))
            assert again.status_code == r.status_code
            return r
        await asyncio.sleep(0.02)


async def test_nginx_forwards_identity_and_refuses_dead_tokens(pg, tmp_path) -> None:
    require(NGINX is not None, "nginx (Debian package nginx-light)")
    plan = await make_plan(pg, real_clock(), "Gateway")
    user, revoked = await plan.add_user(), await plan.add_user()
    old = await make_plan(pg, real_clock(hours=2), "Old tokens")  # tokens issued 2 hours ago
    old_user = await old.add_user()

    with tessera(pg.url, tmp_path) as api, echo_upstream() as upstream, \
            nginx(tmp_path, tessera=api, upstream=upstream.port) as gateway:
        async with httpx2.AsyncClient(base_url=gateway) as http, \
                httpx2.AsyncClient(base_url=api) as tessera_api:
            # A valid personal token passes; the upstream sees who it is, not what the client
            # claimed about itself.
            r = await http.get("/api/items?x=1", headers={**bearer(user.token),
                                                          "X-Tessera-Client": "spoofed",
                                                          "X-Tessera-Subject": "spoofed",
                                                          "X-Tessera-Refusal-Rule": "spoofed"})
            assert r.status_code == 200, r.text
            seen = r.json()["headers"]
            assert seen["x-tessera-subject"] == str(user.user_id)
            assert seen["x-tessera-plan"] == str(plan.plan_id)
            assert seen["x-tessera-scopes"] == "*"
            assert seen["x-tessera-token-kind"] == "personal"
            assert "x-tessera-client" not in seen and "x-tessera-expires-at" not in seen
            assert "x-tessera-refusal-rule" not in seen
            assert r.json()["path"] == "/api/items?x=1"

            # No token, a made-up one: 401 with the RFC 6750 challenge, upstream never asked.
            r = await http.get("/api/refused")
            assert r.status_code == 401
            assert r.headers["www-authenticate"] == 'Bearer realm="tessera"'
            r = await http.get("/api/refused", headers=bearer("tsp_" + "A" * 49))
            assert r.status_code == 401
            assert 'error="invalid_token"' in r.headers["www-authenticate"]

            # Revoked through Tessera's API (the same process that answers the check).
            assert (await http.get("/api/items", headers=revoked.auth)).status_code == 200
            listed = (await tessera_api.get("/v1/me/tokens", headers=revoked.auth)).json()
            r = await tessera_api.delete(f"/v1/me/tokens/{listed['items'][0]['id']}",
                                         headers=revoked.auth)
            assert r.status_code == 204
            r = await refused_within(http, "/api/items", revoked.token, 401)
            assert r.status_code == 401
            assert 'error_description="the token is revoked"' in r.headers["www-authenticate"]

            # Policy-expired: a period set now expires tokens generated more than an hour ago.
            assert (await http.get("/api/items", headers=old_user.auth)).status_code == 200
            r = await tessera_api.put(f"/v1/plans/{old.plan_id}/token-expiration",
                                      json={"value": 1, "unit": "hours"}, headers=old.admin.auth)
            assert r.status_code == 200, r.text
            r = await refused_within(http, "/api/items", old_user.token, 401)
            assert r.status_code == 401
            assert 'error_description="the token is expired"' in r.headers["www-authenticate"]

            # An integration's token: identity with its client; scopes enforced per location.
            r = await tessera_api.post(
                f"/v1/plans/{plan.plan_id}/integrations", headers=plan.admin.auth,
                json={"name": "In-house", "scopes": ["data:read", "data:write"]})
            assert r.status_code == 201, r.text
            integ = r.json()
            r = await tessera_api.post(
                f"/v1/plans/{plan.plan_id}/integrations/{integ['id']}/tokens",
                json={"scopes": ["data:read"]}, headers=plan.admin.auth)
            assert r.status_code == 201, r.text
            reader = r.json()["token"]
            r = await http.get("/api/items", headers=bearer(reader))
            assert r.status_code == 200
            seen = r.json()["headers"]
            assert seen["x-tessera-client"] == integ["client_id"]
            assert seen["x-tessera-scopes"] == "data:read"
            assert seen["x-tessera-token-kind"] == "integration"
            r = await http.post("/api/write/refused", headers=bearer(reader), json={"a": 1})
            assert r.status_code == 403
            assert r.headers["www-authenticate"] == (
                'Bearer realm="tessera", error="insufficient_scope", '
                'error_description="the token lacks a required scope", scope="data:write"')

            # An OAuth access token past its own lifetime.
            expired = await expired_access_token(pg, plan.plan_id, uuid.UUID(integ["id"]))
            r = await http.get("/api/refused", headers=bearer(expired))
            assert r.status_code == 401
            assert 'error_description="the token is expired"' in r.headers["www-authenticate"]

            # The integration's review is revoked (by another process: this test's): every
            # token of it is refused, within the stated bound, with the rule that applied.
            r = await http.post("/api/items", headers=bearer(reader), json={"a": 1})
            assert r.status_code == 200
            await revoke_review(pg, uuid.UUID(integ["id"]))
            r = await refused_within(http, "/api/items", reader, 403)
            assert r.status_code == 403
            assert r.headers["x-tessera-refusal-rule"] == "review_revoked"
            assert 'error="integration_refused"' in r.headers["www-authenticate"]

            # Nothing refused ever reached the upstream.
            assert not [p for p in upstream.paths if "refused" in p]


async def _integration(tessera_api: httpx2.AsyncClient, plan) -> tuple[str, str]:  # noqa: ANN001
    """A custom integration of the plan, made through Tessera's API: its credentials."""
    r = await tessera_api.post(f"/v1/plans/{plan.plan_id}/integrations",
                               headers=plan.admin.auth,
                               json={"name": "Bound", "scopes": ["data:read"]})
    assert r.status_code == 201, r.text
    return r.json()["client_id"], r.json()["client_secret"]


async def test_nginx_passes_a_dpop_bound_token_only_with_its_proof(pg, tmp_path) -> None:
    """RFC 9449 through the documented configuration: nginx passes the client's DPoP header
    and the original method and URL; the check passes the key's holder and nobody else."""
    from tests.oauth2.test_dpop import Prover

    require(NGINX is not None, "nginx (Debian package nginx-light)")
    plan = await make_plan(pg, real_clock(), "DPoP")
    clock = real_clock()
    prover, thief = Prover(clock), Prover(clock, "OKP")
    with tessera(pg.url, tmp_path) as api, echo_upstream() as upstream, \
            nginx(tmp_path, tessera=api, upstream=upstream.port) as gateway:
        async with httpx2.AsyncClient(base_url=gateway) as http, \
                httpx2.AsyncClient(base_url=api) as tessera_api:
            creds = await _integration(tessera_api, plan)
            r = await tessera_api.post("/oauth2/token", auth=creds,
                                       data={"grant_type": "client_credentials"},
                                       headers={"DPoP": prover("POST", f"{api}/oauth2/token")})
            assert r.status_code == 200 and r.json()["token_type"] == "DPoP", r.text
            token = r.json()["access_token"]
            url = f"{gateway}/api/items"

            def dpop_auth(proof: str) -> dict[str, str]:
                return {"Authorization": f"DPoP {token}", "DPoP": proof}

            r = await http.get("/api/items?page=2", headers=dpop_auth(prover("GET", url, token)))
            assert r.status_code == 200, r.text
            assert r.json()["headers"]["x-tessera-client"] == creds[0]
            for headers in [dpop_auth(thief("GET", url, token)),
                            dpop_auth(prover("POST", url, token)),
                            dpop_auth(prover("GET", f"{gateway}/api/other", token)),
                            bearer(token)]:
                r = await http.get("/api/items", headers=headers)
                assert r.status_code == 401, r.text
                assert r.headers["www-authenticate"].startswith("DPoP ")
            proof = prover("GET", url, token)
            assert (await http.get("/api/items", headers=dpop_auth(proof))).status_code == 200
            assert (await http.get("/api/items", headers=dpop_auth(proof))).status_code == 401


async def test_nginx_passes_tesseras_dpop_nonce_to_the_client(pg, tmp_path) -> None:
    """With server nonces required (RFC 9449 §9), the client learns the nonce from the 401
    nginx gives it, and passes with a proof that carries it."""
    from tests.oauth2.test_dpop import Prover

    require(NGINX is not None, "nginx (Debian package nginx-light)")
    plan = await make_plan(pg, real_clock(), "DPoP nonces")
    prover = Prover(real_clock())
    with tessera(pg.url, tmp_path, dpop_nonce_required="true") as api, \
            echo_upstream() as upstream, \
            nginx(tmp_path, tessera=api, upstream=upstream.port) as gateway:
        async with httpx2.AsyncClient(base_url=gateway) as http, \
                httpx2.AsyncClient(base_url=api) as tessera_api:
            creds = await _integration(tessera_api, plan)
            token_url = f"{api}/oauth2/token"
            form = {"grant_type": "client_credentials"}
            r = await tessera_api.post("/oauth2/token", auth=creds, data=form,
                                       headers={"DPoP": prover("POST", token_url)})
            assert r.status_code == 400 and r.json()["error"] == "use_dpop_nonce"
            nonce = r.headers["dpop-nonce"]
            r = await tessera_api.post("/oauth2/token", auth=creds, data=form,
                                       headers={"DPoP": prover("POST", token_url, nonce=nonce)})
            assert r.status_code == 200, r.text
            token = r.json()["access_token"]
            url = f"{gateway}/api/items"
            r = await http.get("/api/items", headers={"Authorization": f"DPoP {token}",
                                                      "DPoP": prover("GET", url, token)})
            assert r.status_code == 401
            assert 'error="use_dpop_nonce"' in r.headers["www-authenticate"]
            assert r.headers["dpop-nonce"]  # Tessera's nonce, through nginx
            r = await http.get("/api/items", headers={
                "Authorization": f"DPoP {token}",
                "DPoP": prover("GET", url, token, nonce=r.headers["dpop-nonce"])})
            assert r.status_code == 200, r.text
            assert "dpop-nonce" not in r.headers  # nothing to say when it passes
