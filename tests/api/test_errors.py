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


async def test_a_value_the_database_refuses_is_a_400_not_a_500(client, plan, database) -> None:
    """A NUL in a name that validation lets through: PostgreSQL refuses it (SQLite stores it);
    either way the answer is not a 500, and the refused request wrote nothing."""
    body = {"email": "nul@example.com", "name": "a\x00b", "password": "long enough password"}
    r = await client.post(f"/v1/plans/{plan.plan_id}/users", json=body, headers=plan.admin.auth)
    if database.backend == "postgresql":
        assert r.status_code == 400, r.text
        assert r.json() == {"error": "invalid_request",
                            "message": "a value in the request cannot be stored"}
        listed = await client.get(f"/v1/plans/{plan.plan_id}/users", headers=plan.admin.auth)
        assert "nul@example.com" not in listed.text
    else:
        assert r.status_code == 201, r.text


async def test_no_free_pool_connection_is_a_503(clock) -> None:
    """The pool is fixed; a request that waits past its timeout for a connection is answered
    503 with Retry-After (fail closed), on the OAuth endpoints as RFC 6749 JSON (PostgreSQL:
    SQLite's engine has no such pool)."""
    import httpx2

    from app.config import Settings
    from app.db import make_engine
    from app.main import create_app
    from tests.conftest import make_plan, migrated_pg_database
    from tests.helpers import create_gateway_client

    async with migrated_pg_database() as db:
        settings = Settings(database_url=db.url, issuer="https://tessera.test",
                            secret_key="test-secret-key-for-signing-cookies",
                            token_cache_size=0)
        plan = await make_plan(db, clock)
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=create_app(
                settings, clock=clock, engine=db.engine)), base_url="https://tessera.test") as c:
            creds = await create_gateway_client(c, plan)
        engine = make_engine(db.url, pool_size=1, pool_timeout=0.2)
        app = create_app(settings, clock=clock, engine=engine)
        try:
            async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app),
                                          base_url="https://tessera.test") as c:
                held = await engine.connect()  # the pool's one connection
                try:
                    await held.exec_driver_sql("SELECT 1")
                    r = await c.get("/v1/me/tokens", headers=plan.admin.auth)
                    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
                    assert r.json()["error"] == "unavailable"
                    r = await c.post("/oauth2/introspect", data={"token": plan.admin.token},
                                     auth=creds)
                    assert r.status_code == 503, r.text
                    assert r.json()["error"] == "temporarily_unavailable"
                finally:
                    await held.close()
                r = await c.get("/v1/me/tokens", headers=plan.admin.auth)
                assert r.status_code == 200, r.text  # and back once a connection is free
        finally:
            await engine.dispose()


@pytest.mark.parametrize("offset", [10**20, 100_001])
async def test_an_offset_past_the_bound_is_a_422(client, plan, offset) -> None:
    """Larger than a 64-bit integer, or than the rows a listing may skip within its statement
    timeout: refused by validation on both backends, never a 500 (nor a 503 for a statement
    that outlived its timeout)."""
    r = await client.get("/v1/me/tokens", params={"offset": offset}, headers=plan.admin.auth)
    assert r.status_code == 422 and r.json()["error"] == "invalid_request", r.text
    r = await client.get("/v1/me/tokens", params={"offset": 100_000}, headers=plan.admin.auth)
    assert r.status_code == 200 and r.json()["items"] == []


@pytest.mark.parametrize("path", ["/v1/me/tokens", "/oauth2/token"])
async def test_a_client_leaving_mid_body_is_not_an_error_of_ours(app, plan, path,
                                                                 caplog) -> None:
    """The connection closes before the body is read (`http.disconnect`): nothing is done,
    nothing is logged as an error, and the answer (that nobody reads) is a 400, not a 500."""
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": b'{"na', "more_body": True},
                {"type": "http.disconnect"}]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    content_type = b"application/json" if path.startswith("/v1") else \
        b"application/x-www-form-urlencoded"
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "https", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "client": ("192.0.2.1", 1000),
             "server": ("tessera.test", 443),
             "headers": [(b"host", b"tessera.test"), (b"content-type", content_type),
                         (b"content-length", b"100"),
                         (b"authorization", plan.admin.auth["Authorization"].encode())]}
    with caplog.at_level("INFO"):
        await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 400, sent
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


async def test_basic_credentials_that_are_not_ascii_are_refused_not_failed(client, plan) -> None:
    """Starlette reads header bytes as latin-1: a Basic value with bytes above 0x7f reaches
    the base64 decoder as non-ASCII text, which it refuses with a ValueError of its own."""
    for value in (b"Basic \xff", b"Basic \xc3\xa9", b"Basic \xe9\xe9\xe9\xe9"):
        r = await client.post("/v1/me/tokens", headers={"Authorization": value})
        assert r.status_code == 401, (value, r.text)
        for path in ("/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"):
            r = await client.post(path, headers={"Authorization": value},
                                  data={"grant_type": "client_credentials", "token": "x"})
            assert 400 <= r.status_code < 500, (path, value, r.text)
            assert r.json()["error"] in {"invalid_client", "invalid_request"}, (path, r.text)
