"""CPU per request in process: the ASGI app called directly, one request at a time, no sockets (no
HTTP parsing, no client); `raw` is the raw ASGI yardstick (bench/yardstick.py). Shows what a
request costs the server's own code, apart from uvicorn and wrk. With `--concurrency 1` (the
default) requests run one at a time, so batching (app/tokens/batches.py) has nothing to group;
with more, that many run at once and the mean batch sizes of the token reader and writer are
printed too.

    python -m bench.inprocess [--requests 1000] [--concurrency 1]
                              [--kinds raw,healthz,check,introspect,cc,refresh]
                              # also: check-dpop-es256, check-dpop-ed25519,
                              # also: me, my-tokens, period, ..., page-api-access,
                              # page-security, page-tokens, page-integrations
                              [--cache-size 0]  # 0: every lookup reads the database

Creates and drops its own PostgreSQL database (seeded as `make bench` seeds it). Prints process
CPU time and wall time per request, two rounds each. Run by hand; never part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import pstats
import time
import uuid
from typing import Any

import asyncpg

from app.config import Settings
from app.main import create_app, serve
from app.ops.observe import Observed
from app.tokens import batches
from bench import seed, yardstick

_FORM = (b"content-type", b"application/x-www-form-urlencoded")


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]],
           body: bytes = b"") -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
            "headers": [*headers, (b"host", b"bench"),
                        (b"content-length", str(len(body)).encode())], "state": {}}


async def _call(app: Any, scope: dict[str, Any], body: bytes) -> int:  # noqa: ANN401
    sent = False
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


def _basic(client: seed.Client) -> bytes:
    return b"Basic " + base64.b64encode(f"{client.client_id}:{client.secret}".encode())


async def main_async(args: argparse.Namespace) -> None:
    name = f"tessera_inprocess_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(f"{args.pg}/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{args.pg.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
    try:
        from app.cli import migrate

        await asyncio.to_thread(migrate, url)
        fx = await seed.seed_base(url)
        conn = await asyncpg.connect(f"{args.pg}/{name}")
        known = await seed.add_personal(conn, fx, 100)
        from joserfc.jwk import thumbprint

        from bench import run

        for alg in ("ES256", "Ed25519"):  # tokens bound to a key; a fresh proof per request
            jkt = thumbprint(run.dpop_key(alg).as_dict(private=False))
            run.DPOP_TOKENS[alg] = await seed.add_bound(conn, fx, jkt, 50)
        refresh = iter(await seed.add_oauth(conn, fx, seed.SecretKind.refresh,
                                            2 * (args.requests + 20) + 40))
        # As `make bench` does: PostgreSQL's statistics of the seeded tables, or it plans the
        # batched lookups as scans of a table it believes empty.
        await conn.execute("VACUUM ANALYZE")
        await conn.close()
        settings = Settings(database_url=url, log_level="warning",
                            token_cache_size=args.cache_size, secret_key="bench-inprocess")
        # As `tessera serve` composes it (app.main.create_served_app), the heap frozen and the
        # young generation collected as seldom as there.
        inner = create_app(settings, freeze_heap=True)
        served = Observed(serve(inner), metrics_on=settings.metrics_enabled)
        token_auth, intro_auth = _basic(fx.app), _basic(fx.gateway)

        plan = fx.plans[0]
        as_admin = (b"authorization", f"Bearer {known[0]}".encode())  # the first plan's admin
        management = {"me": "/v1/me", "my-tokens": "/v1/me/tokens",
                      "period": f"/v1/plans/{plan}/token-expiration",
                      "integrations": f"/v1/plans/{plan}/integrations",
                      "users": f"/v1/plans/{plan}/users",
                      "plan-tokens": f"/v1/plans/{plan}/tokens",
                      "audit": f"/v1/plans/{plan}/audit"}

        from starlette.responses import Response

        from app.oauth2 import browser

        signed_in = Response()
        browser.start_session(signed_in, settings, fx.users[0])  # the first plan's admin
        cookie = (b"cookie", signed_in.headers["set-cookie"].split(";", 1)[0].encode())
        pages = {"page-api-access": "/console/me/api-access",
                 "page-security": "/console/admin/security/api-tokens",
                 "page-tokens": "/console/admin/tokens",
                 "page-integrations": "/console/admin/integrations"}

        proofs: dict[str, Any] = {}

        def request(kind: str, i: int) -> tuple[dict[str, Any], bytes]:
            bearer = (b"authorization", f"Bearer {known[i % 50]}".encode())
            if kind.startswith("check-dpop-"):  # as nginx forwards a DPoP-bound request
                alg = {"es256": "ES256", "ed25519": "Ed25519"}[kind[11:]]
                if alg not in proofs:
                    proofs[alg] = iter(run.dpop_lines(alg, 2 * args.requests + 40))
                token, proof = next(proofs[alg]).split(" ")
                return _scope("GET", "/v1/gateway/check", [
                    (b"authorization", f"DPoP {token}".encode()), (b"dpop", proof.encode()),
                    (b"x-original-method", b"GET"),
                    (b"x-original-url", b"https://api.example/v2/things")]), b""
            if kind in pages:
                return _scope("GET", pages[kind], [cookie]), b""
            if kind in management:
                return _scope("GET", management[kind], [as_admin]), b""
            if kind == "personal-create":
                body = b'{"name":"bench"}'
                return _scope("POST", "/v1/me/tokens",
                              [as_admin, (b"content-type", b"application/json")], body), body
            if kind == "period-set":
                body = b'{"value":1,"unit":"years"}'
                return _scope("PUT", management["period"],
                              [as_admin, (b"content-type", b"application/json")], body), body
            body = {"introspect": lambda: f"token={known[i % 50]}",
                    "cc": lambda: "grant_type=client_credentials",
                    "refresh": lambda: f"grant_type=refresh_token&refresh_token={next(refresh)}",
                    }.get(kind, str)().encode()
            match kind:
                case "healthz" | "raw":
                    return _scope("GET", "/healthz", []), b""
                case "check":
                    return _scope("GET", "/v1/gateway/check", [bearer]), b""
                case "introspect":
                    return _scope("POST", "/oauth2/introspect",
                                  [(b"authorization", intro_auth), _FORM], body), body
                case _:
                    return _scope("POST", "/oauth2/token",
                                  [(b"authorization", token_auth), _FORM], body), body

        sizes: dict[str, list[int]] = {}
        for cls in (batches.TokenReader, batches.TokenWriter):
            def counted(run: Any, name: str = cls.__name__) -> Any:  # noqa: ANN401
                async def _run(self: Any, items: list[Any]) -> Any:  # noqa: ANN401
                    sizes.setdefault(name, []).append(len(items))
                    return await run(self, items)
                return _run
            cls._run = counted(cls._run)

        async def measure(kind: str) -> None:
            sizes.clear()
            counter = iter(range(args.requests))

            app = yardstick.raw if kind == "raw" else served

            async def worker() -> None:
                for i in counter:
                    status = await _call(app, *request(kind, i))
                    assert status in (200, 201), (kind, status)

            profiler = cProfile.Profile() if args.cprofile else None
            cpu, wall, own = time.process_time(), time.perf_counter(), time.thread_time()
            if profiler is not None:
                profiler.enable()
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            if profiler is not None:
                profiler.disable()
                pstats.Stats(profiler).sort_stats(args.cprofile).print_stats(args.top)
            cpu = (time.process_time() - cpu) / args.requests * 1e6
            own = (time.thread_time() - own) / args.requests * 1e6
            wall = time.perf_counter() - wall
            mean = "  ".join(f"{name} batches {len(s)}, mean size {sum(s) / len(s):.1f}"
                             for name, s in sorted(sizes.items()))
            print(f"{kind:12s} cpu {cpu:7.0f} µs/request ({own:5.0f} on the event loop's "
                  f"thread)   {args.requests / wall:7.0f} "
                  f"requests/s   {mean}", flush=True)

        async with inner.router.lifespan_context(inner):
            await asyncio.sleep(0.5)  # the cache listener's first heartbeat
            for _round in range(2):
                for kind in args.kinds.split(","):
                    for i in range(10):
                        assert await _call(yardstick.raw if kind == "raw" else served,
                                           *request(kind, i)) in (200, 201), kind
                    await measure(kind)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--kinds", default="healthz,check,introspect,cc,refresh")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--cprofile", choices=["tottime", "cumulative"],
                        help="profile each measured run (cProfile) and print its top lines")
    parser.add_argument("--top", type=int, default=25, help="lines of the profile printed")
    parser.add_argument("--cache-size", type=int, default=Settings().token_cache_size,
                        help="the token cache's size (0 turns it off, as the cache-miss rows "
                             "of `make bench` run)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
