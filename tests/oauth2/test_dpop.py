"""DPoP (RFC 9449) end to end: tokens bound at the token endpoint, introspection saying so,
the gateway check and the management API passing only the key's holder, public clients'
refresh tokens bound, codes bound by `dpop_jkt`, clients that require DPoP, nonces, replays
across two replicas, and a real client library. Both backends; the clock is the test's."""

from __future__ import annotations

import asyncio
import json
import uuid
from urllib.parse import urlsplit

import httpx2
import pytest
import requests
from joserfc import jws
from joserfc.jwk import ECKey, OKPKey, thumbprint

from app.config import Settings
from app.gateway.fast_path import FastChecks
from app.main import create_app
from app.oauth2 import dpop
from tests.conftest import PlanFixture
from tests.helpers import create_gateway_client, introspect, served_through
from tests.oauth2.browser import Browser, redirect_params
from tests.oauth2.conftest import register_custom
from tests.oauth2.test_browser_chromium import live, pkce  # noqa: F401 - a fixture
from tests.oauth2.test_security import authorize_url

pytestmark = pytest.mark.asyncio

TOKEN_URL = "https://tessera.test/oauth2/token"
API = "https://api.example/v2/things"


class Prover:
    """A client's DPoP key, making proofs at the test's clock (joserfc signs them)."""

    def __init__(self, clock, kind: str = "EC") -> None:  # noqa: ANN001
        self.clock = clock
        self.key = ECKey.generate_key("P-256") if kind == "EC" else OKPKey.generate_key("Ed25519")
        self.alg = "ES256" if kind == "EC" else "Ed25519"
        self.jkt = thumbprint(self.key.as_dict(private=False))

    def __call__(self, method: str = "POST", url: str = TOKEN_URL, token: str | None = None,
                 **claims: object) -> str:
        body = {"jti": str(uuid.uuid4()), "htm": method, "htu": url,
                "iat": int(self.clock.now().timestamp()), **claims}
        if token is not None:
            body["ath"] = dpop.ath(token)
        header = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.key.as_dict(private=False)}
        return jws.serialize_compact(header, json.dumps(body), self.key, algorithms=[self.alg])


async def machine_token(client, app_creds, proof: str | None = None, **form: str):  # noqa: ANN001, ANN201
    headers = {"DPoP": proof} if proof else {}
    return await client.post("/oauth2/token", headers=headers, auth=app_creds,
                             data={"grant_type": "client_credentials", **form})


def forwarded(method: str = "GET", url: str = API) -> dict[str, str]:
    """What nginx passes to the check (docs/gateway.md)."""
    parts = urlsplit(url)
    return {"X-Original-Method": method, "X-Forwarded-Proto": parts.scheme,
            "X-Forwarded-Host": parts.netloc,
            "X-Original-URI": parts.path + (f"?{parts.query}" if parts.query else "")}


@pytest.fixture
async def machine(client, plan: PlanFixture):  # noqa: ANN001, ANN201
    app = await register_custom(client, plan, scopes=["profile", "data:read", "plan:read"])
    return app.client_id, app.client_secret


async def test_a_proof_binds_the_token_and_introspection_says_to_which_key(
        client, plan, clock, machine) -> None:  # noqa: ANN001
    prover = Prover(clock)
    r = await machine_token(client, machine, prover())
    assert r.status_code == 200, r.text
    assert r.json()["token_type"] == "DPoP"
    gateway = await create_gateway_client(client, plan)
    seen = await introspect(client, gateway, r.json()["access_token"])
    assert seen["active"] is True and seen["token_type"] == "DPoP"
    assert seen["cnf"] == {"jkt": prover.jkt}
    # Without a proof: a bearer token, as before.
    r = await machine_token(client, machine)
    assert r.json()["token_type"] == "Bearer"
    assert "cnf" not in await introspect(client, gateway, r.json()["access_token"])
    meta = (await client.get("/.well-known/oauth-authorization-server")).json()
    assert "ES256" in meta["dpop_signing_alg_values_supported"]
    assert "HS256" not in meta["dpop_signing_alg_values_supported"]


async def test_the_token_endpoint_refuses_bad_and_replayed_proofs(client, clock, machine) -> None:  # noqa: ANN001
    prover = Prover(clock)
    once = prover()
    assert (await machine_token(client, machine, once)).status_code == 200
    for bad in [once,  # replayed
                prover(url="https://tessera.test/oauth2/introspect"), prover(method="GET"),
                prover(iat=int(clock.now().timestamp()) - 120), "not.a.proof"]:
        r = await machine_token(client, machine, bad)
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "invalid_dpop_proof"
    r = await client.post("/oauth2/token", auth=machine, data={"grant_type":
                                                               "client_credentials"},
                          headers=[("DPoP", prover()), ("DPoP", prover())])
    assert r.status_code == 400 and r.json()["error"] == "invalid_dpop_proof"
    # A stranger (wrong secret) spends no proof: the client's own request with it still works.
    mine = prover()
    r = await machine_token(client, (machine[0], "wrong"), mine)
    assert r.status_code == 401
    assert (await machine_token(client, machine, mine)).status_code == 200


async def test_the_gateway_check_passes_only_the_holder_of_the_key(
        app, client, plan, clock, machine) -> None:  # noqa: ANN001
    prover, thief = Prover(clock), Prover(clock, "OKP")
    token = (await machine_token(client, machine, prover())).json()["access_token"]
    # Both the application's route and the fast path in front of it (tessera serve).
    async with served_through(FastChecks, app) as fast:
        for c in (client, fast):
            auth = {"Authorization": f"DPoP {token}"}
            good = prover("GET", API, token)
            r = await c.get("/v1/gateway/check", headers={**auth, "DPoP": good, **forwarded()})
            assert r.status_code == 200, r.text
            assert r.headers["x-tessera-plan"] == str(plan.plan_id)
            refusals = {
                "replayed": {**auth, "DPoP": good, **forwarded()},
                "as bearer": {"Authorization": f"Bearer {token}", **forwarded()},
                "no proof": {**auth, **forwarded()},
                "another key": {**auth, "DPoP": thief("GET", API, token), **forwarded()},
                "another URL": {**auth, "DPoP": prover("GET", API, token),
                                **forwarded(url="https://api.example/v2/other")},
                "another method": {**auth, "DPoP": prover("GET", API, token),
                                   **forwarded(method="DELETE")},
                "wrong ath": {**auth, "DPoP": prover("GET", API, "tsa_other"), **forwarded()},
                "no forwarded request": {**auth, "DPoP": prover("GET", API, token)},
            }
            for why, headers in refusals.items():
                r = await c.get("/v1/gateway/check", headers=headers)
                assert r.status_code == 401, (why, r.text)
                challenge = r.headers["www-authenticate"]
                assert challenge.startswith("DPoP "), (why, challenge)
                assert 'algs="ES256' in challenge
            # The query of the original request is not part of htu.
            r = await c.get("/v1/gateway/check", headers={
                **auth, "DPoP": prover("GET", API, token), **forwarded(url=API + "?page=2")})
            assert r.status_code == 200, r.text
    # A bearer token sent with the DPoP scheme is refused too.
    bearer = (await machine_token(client, machine)).json()["access_token"]
    r = await client.get("/v1/gateway/check", headers={
        "Authorization": f"DPoP {bearer}", "DPoP": prover("GET", API, bearer), **forwarded()})
    assert r.status_code == 401
    # Revocation applies to bound tokens as to any.
    r = await client.post("/oauth2/revoke", auth=machine, data={"token": token})
    assert r.status_code == 200
    r = await client.get("/v1/gateway/check", headers={
        "Authorization": f"DPoP {token}", "DPoP": prover("GET", API, token), **forwarded()})
    assert r.status_code == 401 and "revoked" in r.json()["message"]


async def test_the_plans_period_expires_bound_tokens_too(client, plan, clock, machine) -> None:  # noqa: ANN001
    prover = Prover(clock)
    token = (await machine_token(client, machine, prover())).json()["access_token"]
    clock.advance(minutes=30)
    r = await client.put(f"/v1/plans/{plan.plan_id}/token-expiration", headers=plan.admin.auth,
                         json={"value": 10, "unit": "minutes"})
    assert r.status_code == 200
    r = await client.get("/v1/gateway/check", headers={
        "Authorization": f"DPoP {token}", "DPoP": prover("GET", API, token), **forwarded()})
    assert r.status_code == 401 and "expired" in r.json()["message"]


async def test_the_management_api_takes_a_bound_token_only_with_its_proof(
        client, plan, clock, machine) -> None:  # noqa: ANN001
    prover = Prover(clock)
    token = (await machine_token(client, machine, prover())).json()["access_token"]
    path = f"/v1/plans/{plan.plan_id}/token-expiration"
    url = f"https://tessera.test{path}"
    r = await client.get(path, headers={"Authorization": f"DPoP {token}",
                                        "DPoP": prover("GET", url, token)})
    assert r.status_code == 200, r.text
    r = await client.get(path, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("DPoP ")
    for proof in [prover("GET", url, "tsa_x"), prover("POST", url, token),
                  Prover(clock)("GET", url, token), prover("GET", url + "x", token)]:
        r = await client.get(path, headers={"Authorization": f"DPoP {token}", "DPoP": proof})
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "invalid_dpop_proof"


async def test_twenty_proven_requests_at_once_hold_no_connection_while_their_proof_is_recorded(
        app, client, plan, clock, machine) -> None:  # noqa: ANN001
    """A write request reads its own token (the cache is cold) in its unit of work, then waits
    for its proof to be recorded on a connection of its own. Holding the first while waiting for
    the second, 20 such requests would take the test pool's 5 connections and leave none for the
    proofs: each would answer 503 once the pool gave up, not what it had to say (403 here)."""
    prover = Prover(clock)
    tokens = [(await machine_token(client, machine, prover())).json()["access_token"]
              for _ in range(20)]
    path = f"/v1/me/tokens/{uuid.uuid4()}"
    url = f"https://tessera.test{path}"
    if app.state.token_cache is not None:
        app.state.token_cache.clear()
    answers = await asyncio.gather(*(client.delete(path, headers={
        "Authorization": f"DPoP {token}", "DPoP": prover("DELETE", url, token)})
        for token in tokens))
    assert [a.status_code for a in answers] == [403] * 20, answers[0].text


async def test_a_public_clients_refresh_token_is_bound_to_its_key(app, client, plan,
                                                                  clock) -> None:  # noqa: ANN001
    public = await register_custom(client, plan, confidential=False)
    verifier, challenge = pkce()
    prover = Prover(clock)
    browser = Browser(app)
    try:
        back = await browser.authorize(authorize_url(public.client_id, challenge),
                                       plan.admin.email, plan.admin.password)
    finally:
        await browser.close()
    code = redirect_params(back)["code"]
    from tests.oauth2.conftest import REDIRECT

    r = await client.post("/oauth2/token", headers={"DPoP": prover()}, data={
        "grant_type": "authorization_code", "code": code, "client_id": public.client_id,
        "redirect_uri": REDIRECT, "code_verifier": verifier})
    assert r.status_code == 200, r.text
    assert r.json()["token_type"] == "DPoP"
    refresh = r.json()["refresh_token"]

    def refreshing(proof: str | None) -> dict:
        return {"headers": {"DPoP": proof} if proof else {},
                "data": {"grant_type": "refresh_token", "refresh_token": refresh,
                         "client_id": public.client_id}}

    for proof in [None, Prover(clock)()]:  # without a proof, with another key: refused
        r = await client.post("/oauth2/token", **refreshing(proof))
        assert r.status_code == 400 and r.json()["error"] == "invalid_dpop_proof", r.text
    r = await client.post("/oauth2/token", **refreshing(prover()))
    assert r.status_code == 200, r.text
    assert r.json()["token_type"] == "DPoP"


async def test_a_code_bound_by_dpop_jkt_is_redeemed_only_with_that_key(app, client, plan,
                                                                       clock) -> None:  # noqa: ANN001
    from tests.oauth2.conftest import REDIRECT

    custom = await register_custom(client, plan)
    prover = Prover(clock)
    for jkt, expected in [("not-a-thumbprint", "invalid_request"), (prover.jkt, None)]:
        verifier, challenge = pkce()
        browser = Browser(app)
        try:
            back = await browser.authorize(
                authorize_url(custom.client_id, challenge, dpop_jkt=jkt), plan.admin.email,
                plan.admin.password)
        finally:
            await browser.close()
        params = redirect_params(back)
        if expected:
            assert params["error"] == expected
            continue
        exchange = {"grant_type": "authorization_code", "code": params["code"],
                    "redirect_uri": REDIRECT, "code_verifier": verifier}
        auth = (custom.client_id, custom.client_secret)
        r = await client.post("/oauth2/token", auth=auth, data=exchange,
                              headers={"DPoP": Prover(clock)()})
        assert r.status_code == 400 and r.json()["error"] == "invalid_dpop_proof"
        # The failed attempt did not spend the code: the right key redeems it.
        r = await client.post("/oauth2/token", auth=auth, data=exchange,
                              headers={"DPoP": prover()})
        assert r.status_code == 200, r.text


async def test_a_client_registered_dpop_bound_must_prove(client, plan, clock) -> None:  # noqa: ANN001
    bound = await register_custom(client, plan, dpop_bound_access_tokens=True)
    creds = (bound.client_id, bound.client_secret)
    r = await machine_token(client, creds)
    assert r.status_code == 400 and r.json()["error"] == "invalid_dpop_proof"
    r = await machine_token(client, creds, Prover(clock)())
    assert r.status_code == 200 and r.json()["token_type"] == "DPoP"
    view = await client.get(f"/v1/plans/{plan.plan_id}/integrations", headers=plan.admin.auth)
    assert any(v["client_id"] == bound.client_id for v in view.json())


async def test_nonces_when_the_server_requires_them(database, clock, plan) -> None:  # noqa: ANN001
    settings = Settings(database_url=database.url, issuer="https://tessera.test",
                        secret_key="test-secret-key-for-signing-cookies",
                        password_hash_share=1.0, dpop_nonce_required=True)
    app = create_app(settings, clock=clock, engine=database.engine)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app),
                                  base_url="https://tessera.test") as c:
        custom = await register_custom(c, plan)
        creds = (custom.client_id, custom.client_secret)
        prover = Prover(clock)
        r = await machine_token(c, creds, prover())
        assert r.status_code == 400 and r.json()["error"] == "use_dpop_nonce"
        nonce = r.headers["dpop-nonce"]
        r = await machine_token(c, creds, prover(nonce=nonce))
        assert r.status_code == 200, r.text
        r = await machine_token(c, creds, prover(nonce="made-up"))
        assert r.status_code == 400 and r.json()["error"] == "use_dpop_nonce"


async def test_a_proof_used_on_one_replica_is_refused_on_another(database, clock, plan,
                                                                 client, machine) -> None:  # noqa: ANN001
    prover = Prover(clock)
    token = (await machine_token(client, machine, prover())).json()["access_token"]
    settings = Settings(database_url=database.url, issuer="https://tessera.test",
                        secret_key="test-secret-key-for-signing-cookies")
    one, two = (create_app(settings, clock=clock, engine=database.engine) for _ in range(2))
    proof = prover("GET", API, token)
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof, **forwarded()}
    answers = []
    for replica in (one, two, one):
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=replica),
                                      base_url="https://tessera.test") as c:
            answers.append((await c.get("/v1/gateway/check", headers=headers)).status_code)
    assert answers == [200, 401, 401]
    # The same proof 20 times at once on both: exactly one passes.
    proof = prover("GET", API, token)
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof, **forwarded()}
    clients = [httpx2.AsyncClient(transport=httpx2.ASGITransport(app=replica),
                                  base_url="https://tessera.test") for replica in (one, two)]
    try:
        results = await asyncio.gather(*(clients[i % 2].get("/v1/gateway/check",
                                                            headers=headers)
                                          for i in range(20)))
    finally:
        for c in clients:
            await c.aclose()
    assert sorted(r.status_code for r in results) == [200] + [401] * 19


async def test_a_real_client_library_speaks_dpop_with_tessera(live, client, plan, clock,  # noqa: F811
                                                             machine) -> None:  # noqa: ANN001
    """requests-oauth2client (a maintained OAuth 2 client with DPoP support) gets a DPoP token
    and calls the management API with it; its proofs are made at the test's clock."""
    from requests_oauth2client import DPoPKey, OAuth2Client

    class ToLive(requests.adapters.HTTPAdapter):
        """The issuer's URLs (what the proofs name) reach the test's server."""

        def send(self, request, **kwargs):  # noqa: ANN001, ANN201
            request.url = request.url.replace("https://tessera.test", live)
            return super().send(request, **kwargs)

    def run() -> tuple[int, str]:
        session = requests.Session()
        session.mount("https://tessera.test", ToLive())
        key = DPoPKey.generate(alg="ES256",
                               iat_generator=lambda: int(clock.now().timestamp()))
        oauth = OAuth2Client(TOKEN_URL, auth=machine, session=session)
        token = oauth.client_credentials(scope="plan:read", dpop_key=key)
        assert token.token_type == "DPoP"
        r = session.get(f"https://tessera.test/v1/plans/{plan.plan_id}/token-expiration",
                        auth=token)
        return r.status_code, r.text

    status, text = await asyncio.to_thread(run)
    assert status == 200, text


async def test_a_plan_admin_requires_dpop_for_every_custom_integration(
        client, plan, other_plan, clock) -> None:  # noqa: ANN001
    custom = await register_custom(client, plan)
    creds = (custom.client_id, custom.client_secret)
    before = (await machine_token(client, creds)).json()["access_token"]
    path = f"/v1/plans/{plan.plan_id}/dpop"
    assert (await client.get(path, headers=plan.admin.auth)).json() == {
        "required_for_custom_integrations": False}
    # Who may not: a member, another plan's admin, a token derived from another, bad bodies.
    member = await plan.add_user("member")
    r = await client.put(path, headers=member.auth, json={"required_for_custom_integrations":
                                                          True})
    assert r.status_code == 403
    r = await client.put(path, headers=other_plan.admin.auth,
                         json={"required_for_custom_integrations": True})
    assert r.status_code == 404
    admin_app = await register_custom(client, plan, scopes=["plan:admin"])
    derived = (await machine_token(client, (admin_app.client_id, admin_app.client_secret))
               ).json()["access_token"]
    r = await client.put(path, headers={"Authorization": f"Bearer {derived}"},
                         json={"required_for_custom_integrations": True})
    assert r.status_code == 403 and r.json()["error"] == "personal_credentials_required"
    for body in [{}, {"required_for_custom_integrations": "yes"}, {"required": True}]:
        r = await client.put(path, headers=plan.admin.auth, json=body)
        assert r.status_code == 422, body

    r = await client.put(path, headers=plan.admin.auth,
                         json={"required_for_custom_integrations": True})
    assert r.status_code == 200 and r.json()["required_for_custom_integrations"] is True
    r = await machine_token(client, creds)
    assert r.status_code == 400 and r.json()["error"] == "invalid_dpop_proof"
    r = await machine_token(client, creds, Prover(clock)())
    assert r.status_code == 200 and r.json()["token_type"] == "DPoP"
    # Tokens issued before are left as they were; other plans and third-party apps unaffected.
    gateway = await create_gateway_client(client, plan, dpop_bound_access_tokens=False)
    assert (await introspect(client, gateway, before))["active"] is True
    elsewhere = await register_custom(client, other_plan)
    assert (await machine_token(client, (elsewhere.client_id, elsewhere.client_secret))
            ).json()["token_type"] == "Bearer"
    r = await client.put(path, headers=plan.admin.auth,
                         json={"required_for_custom_integrations": False})
    assert (await machine_token(client, creds)).json()["token_type"] == "Bearer"


async def test_an_operator_requires_dpop_of_one_integration(client, plan, clock, operator,
                                                            machine) -> None:  # noqa: ANN001
    views = (await client.get(f"/v1/plans/{plan.plan_id}/integrations",
                              headers=plan.admin.auth)).json()
    ident = next(v["integration_id"] for v in views if v["client_id"] == machine[0])
    path = f"/v1/integrations/{ident}/dpop"
    assert (await machine_token(client, machine)).status_code == 200  # its facts now cached
    r = await client.put(path, headers=plan.admin.auth, json={"dpop_bound_access_tokens": True})
    assert r.status_code == 403  # operators only
    r = await client.put(path, headers=operator, json={"dpop_bound_access_tokens": "yes"})
    assert r.status_code == 422
    r = await client.put(path, headers=operator, json={"dpop_bound_access_tokens": True})
    assert r.status_code == 200 and r.json()["dpop_bound_access_tokens"] is True
    r = await machine_token(client, machine)
    assert r.status_code == 400 and r.json()["error"] == "invalid_dpop_proof"
    assert (await machine_token(client, machine, Prover(clock)())).status_code == 200
    r = await client.put(f"/v1/integrations/{uuid.uuid4()}/dpop", headers=operator,
                         json={"dpop_bound_access_tokens": True})
    assert r.status_code == 404
