"""`make bench` (`python -m bench.run`): seed PostgreSQL with 10k and then 1M tokens, serve
Tessera as a user runs it (`tessera serve`: uvicorn, httptools, asyncio's loop unless `--loop
uvloop`, one worker), drive it with
wrk at 64 connections, and compare every scenario with a bare FastAPI endpoint returning the same
JSON, measured in the same run; the hot paths (introspection, the gateway check) with a raw ASGI
endpoint (no framework) on the same server stack, their yardstick in the design. Prints one table
and writes it to bench/RESULTS.md.

Loopback only; each scenario runs for `--seconds` (after `--warmup`), `--rounds` times, and the
table quotes medians. Never part of the test suite: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx2

from app.credentials import SecretKind
from bench import seed, wrk

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
HOT = 1_000  # tokens the cache-hit scenarios cycle through
KNOWN = 10_000  # presentable personal tokens (the whole first stage)


@dataclass(frozen=True)
class Scenario:
    name: str
    label: str
    server: str  # tessera | nocache | cold | guessed | nometrics | yardstick | raw
    method: str
    path: str
    mode: str
    target: float | None  # minimum ratio to its yardstick (the performance targets of the design)
    consumes: str | None = None  # "refresh" | "access": one fresh token per request
    body: str = '{"name":"bench"}'  # bearer_json's body
    p99_ms: float | None = None  # a latency target, where the design sets one
    against: str = "yardstick"  # its yardstick: "yardstick" (bare FastAPI) or "raw" (raw ASGI)


LOOKUPS = [
    Scenario("introspect-hit", "introspection, cache hit", "tessera", "POST",
             "/oauth2/introspect", "form", 0.9, p99_ms=10, against="raw"),
    Scenario("introspect-miss", "introspection, cache miss (cache off)", "nocache", "POST",
             "/oauth2/introspect", "form", None, against="raw"),
    # A replica's usual miss: a token it has not seen yet, asked about by a gateway it knows.
    Scenario("introspect-cold", "introspection, token not cached (caller cached)", "cold",
             "POST", "/oauth2/introspect", "form", None, against="raw"),
    Scenario("check-hit", "gateway check, cache hit", "tessera", "GET", "/v1/gateway/check",
             "bearer", 0.9, p99_ms=10, against="raw"),
    Scenario("check-miss", "gateway check, cache miss (cache off)", "nocache", "GET",
             "/v1/gateway/check", "bearer", None, against="raw"),
    # Rule 12: the check while password guessers hammer the same server, each guess from its
    # own address and for its own login (a botnet: nothing is throttled, every guess costs an
    # argon2id check). Compare its p99 with "gateway check, cache hit".
    Scenario("check-guessed", f"gateway check, cache hit, beside {8} password guessers",
             "guessed", "GET", "/v1/gateway/check", "bearer", 0.9, p99_ms=10, against="raw"),
    # What the metrics cost (issue: at most 5 %): the same hot paths on a server with
    # TESSERA_METRICS_ENABLED=false, measured in the same rounds.
    Scenario("check-hit-nometrics", "gateway check, cache hit, metrics off", "nometrics", "GET",
             "/v1/gateway/check", "bearer", None, against="raw"),
    Scenario("introspect-hit-nometrics", "introspection, cache hit, metrics off", "nometrics",
             "POST", "/oauth2/introspect", "form", None, against="raw"),
]
# DPoP (RFC 9449): the check of bound tokens, each request with a fresh proof (signed before
# the run: wrk cannot sign) for the request the gateway forwards; target 60% of the raw ASGI
# yardstick, p99 < 10 ms. Introspection of a bound token (its `cnf`): the resource server
# checks proofs.
LOOKUPS += [
    Scenario("check-dpop-es256", "gateway check, DPoP-bound token, ES256 proof", "tessera",
             "GET", "/v1/gateway/check", "dpop", 0.6, consumes="dpop-ES256", p99_ms=10,
             against="raw"),
    Scenario("check-dpop-ed25519", "gateway check, DPoP-bound token, Ed25519 proof", "tessera",
             "GET", "/v1/gateway/check", "dpop", 0.6, consumes="dpop-Ed25519", p99_ms=10,
             against="raw"),
    Scenario("introspect-dpop", "introspection of a DPoP-bound token (cached)", "tessera",
             "POST", "/oauth2/introspect", "form", 0.6, p99_ms=10, against="raw"),
]
GUESSERS = 8
MUTATIONS = [
    Scenario("client-credentials", "client_credentials issuance", "tessera", "POST",
             "/oauth2/token", "form", 0.5),
    Scenario("refresh", "refresh (rotation)", "tessera", "POST", "/oauth2/token", "form", 0.5,
             consumes="refresh"),
    Scenario("revoke", "revocation (RFC 7009)", "tessera", "POST", "/oauth2/revoke", "form",
             None, consumes="access"),
    Scenario("personal-create", "personal token creation", "tessera", "POST", "/v1/me/tokens",
             "bearer_json", 0.25, p99_ms=50),
]
# The management API (`/v1`): what a console and an admin's scripts call. `{plan}` is the
# first plan, whose admin's personal tokens call the plan's endpoints; `/v1/me` is called by
# users of every plan in turn. Creating a user is left out: it hashes a password (argon2id,
# bounded on purpose, rule 12), so it runs at the password lane's pace, not the API's.
MANAGEMENT = [
    Scenario("me", "GET /v1/me", "tessera", "GET", "/v1/me", "bearer", 0.25, p99_ms=50),
    Scenario("my-tokens", "GET /v1/me/tokens", "tessera", "GET", "/v1/me/tokens", "bearer",
             0.25, p99_ms=50),
    Scenario("period", "GET the plan's period", "tessera", "GET",
             "/v1/plans/{plan}/token-expiration", "bearer", 0.25, p99_ms=50),
    Scenario("integrations", "GET the plan's integrations", "tessera", "GET",
             "/v1/plans/{plan}/integrations", "bearer", 0.25, p99_ms=50),
    Scenario("users", "GET the plan's users", "tessera", "GET", "/v1/plans/{plan}/users",
             "bearer", 0.25, p99_ms=50),
    Scenario("plan-tokens", "GET the plan's tokens (100)", "tessera", "GET",
             "/v1/plans/{plan}/tokens", "bearer", 0.25, p99_ms=50),
    Scenario("audit", "GET the plan's audit trail (100)", "tessera", "GET",
             "/v1/plans/{plan}/audit", "bearer", 0.25, p99_ms=50),
    Scenario("period-set", "PUT the plan's period (unchanged)", "tessera", "PUT",
             "/v1/plans/{plan}/token-expiration", "bearer_json", 0.25,
             body='{"value":1,"unit":"years"}', p99_ms=50),
]
# The console's pages (HTML, signed in with a login session cookie): a person's API access
# page (users of every plan in turn), and the Admin Center's pages of the first plan.
CONSOLE = [
    Scenario("page-api-access", "console: Personal settings > API access", "tessera", "GET",
             "/console/me/api-access", "cookie", 0.25, p99_ms=50),
    Scenario("page-security", "console: Admin Center > API access tokens", "tessera", "GET",
             "/console/admin/security/api-tokens", "cookie", 0.25, p99_ms=50),
    Scenario("page-tokens", "console: Admin Center > Tokens (100)", "tessera", "GET",
             "/console/admin/tokens", "cookie", 0.25, p99_ms=50),
    Scenario("page-integrations", "console: Admin Center > Integrations", "tessera", "GET",
             "/console/admin/integrations", "cookie", 0.25, p99_ms=50),
]
# The bench servers' cookie-signing key, so the bench can make their login sessions.
SECRET_KEY = "bench-only-secret-key-for-console-sessions"
YARDSTICK = Scenario("yardstick", "bare FastAPI endpoint (yardstick)", "yardstick", "GET",
                     "/yardstick", "get", None)
RAW = Scenario("raw", "raw ASGI endpoint (yardstick of the hot paths)", "raw", "GET",
               "/yardstick", "get", None, against="raw")
YARDSTICKS = {"yardstick": YARDSTICK, "raw": RAW}


@dataclass
class Stage:
    size: int
    rows: dict[str, int] = field(default_factory=dict)
    results: dict[str, list[wrk.Result]] = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), 0)
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return {
        "cpus (nproc)": str(os.cpu_count()),
        "cpu model": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": (wrk_version.stdout or wrk_version.stderr).splitlines()[0].split(" Copyright")[0],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(argv: list[str], env: dict[str, str], name: str,
          workdir: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    logfile = workdir / f"{name}.log"
    with logfile.open("wb") as out:
        proc = subprocess.Popen([*argv, "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
                                env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {logfile.read_text()[-2000:]}")
            with contextlib.suppress(httpx2.HTTPError):
                httpx2.get(url + "/", timeout=1)
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start")
            time.sleep(0.1)
        yield url, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def py_spy(pid: int, seconds: float, name: str) -> subprocess.Popen:
    """Samples the server while wrk drives it; collapsed stacks to test-artifacts/profiles/
    (summarised by `python -m bench.profile`)."""
    out = ROOT / "test-artifacts" / "profiles" / f"{name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
         "--duration", str(int(seconds)), "--rate", "250", "--format", "raw", "--nonblocking",
         "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.asynccontextmanager
async def guessing(url: str, guessers: int) -> AsyncIterator[dict]:
    """`guessers` loops sending wrong passwords (HTTP Basic, `POST /v1/me/tokens`) until the
    block ends, each guess for a login and from an address (X-Forwarded-For, a documentation
    prefix: a header, no traffic) never seen before; yields their count and answers."""
    tally: dict = {"count": 0, "statuses": collections.Counter(), "seconds": 0.0}
    stop = asyncio.Event()

    async def guesser(http: httpx2.AsyncClient) -> None:
        while not stop.is_set():
            who = uuid.uuid4().hex
            r = await http.post("/v1/me/tokens", json={}, auth=(f"{who}@bench.example", who),
                                headers={"X-Forwarded-For": f"2001:db8::{who[:4]}:{who[4:8]}"})
            tally["count"] += 1
            tally["statuses"][r.status_code] += 1

    started = time.monotonic()
    async with httpx2.AsyncClient(base_url=url, timeout=30) as http:
        tasks = [asyncio.create_task(guesser(http)) for _ in range(guessers)]
        try:
            yield tally
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            tally["seconds"] = time.monotonic() - started


def basic(client: seed.Client) -> str:
    return base64.b64encode(f"{client.client_id}:{client.secret}".encode()).decode()


# One key per algorithm, its bound tokens seeded once (`dpop_tokens`); proofs made per run.
DPOP_KEYS: dict[str, object] = {}
DPOP_TOKENS: dict[str, list[str]] = {}


def dpop_key(alg: str):  # noqa: ANN201
    from joserfc.jwk import ECKey, OKPKey

    if alg not in DPOP_KEYS:
        DPOP_KEYS[alg] = ECKey.generate_key("P-256") if alg == "ES256" \
            else OKPKey.generate_key("Ed25519")
    return DPOP_KEYS[alg]


def dpop_lines(alg: str, count: int) -> list[str]:
    """`count` lines "<token> <proof>", each proof fresh (its own jti, iat now, ath of its
    token) for GET https://api.example/v2/things, over the algorithm's bound tokens."""
    from joserfc import jws

    from app.oauth2 import dpop

    key = dpop_key(alg)
    tokens = DPOP_TOKENS[alg]
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": key.as_dict(private=False)}
    now = int(time.time())
    lines = []
    for i in range(count):
        token = tokens[i % len(tokens)]
        body = {"jti": uuid.uuid4().hex, "htm": "GET", "htu": "https://api.example/v2/things",
                "iat": now, "ath": dpop.ath(token)}
        lines.append(f"{token} {jws.serialize_compact(header, json.dumps(body), key, [alg])}")
    return lines


def session_cookie(user_id: uuid.UUID) -> str:
    """A console login session for `user_id`, as the bench servers sign it."""
    from starlette.responses import Response

    from app.config import Settings
    from app.oauth2 import browser

    response = Response()
    browser.start_session(response, Settings(secret_key=SECRET_KEY), user_id)
    cookie = response.headers["set-cookie"].split(";", 1)[0]
    return cookie


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


async def pg_admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def fmt_rps(x: float) -> str:
    return f"{x:,.0f}"


def table(stages: list[Stage]) -> str:
    head = ("| tokens | scenario | requests/s | p50 ms | p99 ms | ratio to its yardstick | "
            "ratio target | p99 target | non-2xx |\n"
            "|---:|---|---:|---:|---:|---:|---|---|---:|")
    rows = [head]
    for stage in stages:
        medians = {name: statistics.median(r.rps for r in stage.results[name])
                   for name in YARDSTICKS if stage.results.get(name)}
        for sc in [YARDSTICK, RAW, *LOOKUPS, *MUTATIONS, *MANAGEMENT, *CONSOLE]:
            runs = stage.results.get(sc.name)
            if not runs:
                continue
            rps = statistics.median(r.rps for r in runs)
            p50 = statistics.median(r.p50_ms for r in runs)
            p99 = statistics.median(r.p99_ms for r in runs)
            yard_rps = medians.get(sc.against, 0)
            ratio = rps / yard_rps if yard_rps else 0
            of = "raw ASGI" if sc.against == "raw" else "FastAPI"
            target = p99_target = "—"
            if sc.target is not None:
                target = (f"≥ {sc.target:.0%} of {of}: "
                          f"{'met' if ratio >= sc.target else '**not met**'}")
            if sc in YARDSTICKS.values():
                p99_target = "< 10 ms: " + ("met" if p99 < 10 else "**not met**")
            elif sc.p99_ms is not None:
                p99_target = f"< {sc.p99_ms:g} ms: " + ("met" if p99 < sc.p99_ms
                                                        else "**not met**")
            errors = sum(r.non2xx + r.socket_errors for r in runs)
            rows.append(f"| {stage.rows.get(sc.name, stage.size):,} | {sc.label} | "
                        f"{fmt_rps(rps)} | {p50:.2f} | {p99:.2f} | {ratio:.0%} | {target} | "
                        f"{p99_target} | {errors} |")
    return "\n".join(rows)


async def main_async(args: argparse.Namespace) -> int:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is required (Debian package wrk)")
    if args.profile and not (Path(sys.executable).parent / "py-spy").exists():
        raise SystemExit("--profile needs py-spy: pip install -e '.[bench]'")
    workdir = Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    name = f"tessera_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    await pg_admin(args.pg, f'CREATE DATABASE "{name}"')
    base = args.pg.rsplit("/", 1)[0]
    url = base.replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
    raw = f"{base}/{name}"
    stages: list[Stage] = []
    started = time.monotonic()
    try:
        from app.cli import migrate

        await asyncio.to_thread(migrate, url)
        log(f"database {name}: seeding plans, users, integrations")
        fx = await seed.seed_base(url)
        conn = await asyncpg.connect(raw)
        known = await seed.add_personal(conn, fx, KNOWN)
        from joserfc.jwk import thumbprint

        for alg in ("ES256", "Ed25519"):
            jkt = thumbprint(dpop_key(alg).as_dict(private=False))
            DPOP_TOKENS[alg] = await seed.add_bound(conn, fx, jkt, HOT)
        intro_dpop = write_lines(workdir / "intro-dpop.txt",
                                 [f"token={t}" for t in DPOP_TOKENS["ES256"]])
        hot_file = write_lines(workdir / "hot.txt", known[:HOT])
        known_file = write_lines(workdir / "known.txt", known)
        intro_hot = write_lines(workdir / "intro-hot.txt", [f"token={t}" for t in known[:HOT]])
        intro_known = write_lines(workdir / "intro-known.txt", [f"token={t}" for t in known])
        cc_file = write_lines(workdir / "cc.txt", ["grant_type=client_credentials"])
        # The first plan's admin (its first user): every users_per_plan-th known token.
        admin_file = write_lines(workdir / "admin.txt",
                                 known[::len(fx.users)] or known[:1])

        env = {"TESSERA_DATABASE_URL": url, "TESSERA_LOG_LEVEL": "warning",
               "TESSERA_DB_POOL_SIZE": str(args.pool), "TESSERA_SECRET_KEY": SECRET_KEY}
        sessions = write_lines(workdir / "sessions.txt",
                               [session_cookie(u) for u in fx.users])
        admin_session = write_lines(workdir / "admin-session.txt",
                                    [session_cookie(fx.users[0])])
        tessera_cmd = [sys.executable, "-m", "app.cli", "serve", "--loop", args.loop]
        # "cold": a cache of one entry of each kind keeps the one gateway client it is asked by,
        # while the tokens, 10,000 of them in turn, evict each other: every lookup misses.
        with serve(tessera_cmd, env, "tessera", workdir) as (tessera_url, tessera_pid), \
                serve(tessera_cmd, {**env, "TESSERA_TOKEN_CACHE_SIZE": "0"}, "nocache",
                      workdir) as (nocache_url, nocache_pid), \
                serve(tessera_cmd, {**env, "TESSERA_TOKEN_CACHE_SIZE": "1"}, "cold",
                      workdir) as (cold_url, cold_pid), \
                serve(tessera_cmd, {**env, "TESSERA_TRUSTED_PROXIES": "127.0.0.1"},
                      "guessed", workdir) as (guessed_url, guessed_pid), \
                serve(tessera_cmd, {**env, "TESSERA_METRICS_ENABLED": "false"}, "nometrics",
                      workdir) as (nometrics_url, nometrics_pid):
            sample = httpx2.post(f"{tessera_url}/oauth2/introspect", data={"token": known[0]},
                                 auth=(fx.gateway.client_id, fx.gateway.secret)).json()
            assert sample["active"] is True, sample
            body = {"BENCH_YARDSTICK_BODY": json.dumps(sample)}
            yard_cmd = [sys.executable, "-m", "bench.yardstick", "--loop", args.loop]
            with serve(yard_cmd, body, "yardstick", workdir) as (yard_url, _), \
                    serve([*yard_cmd, "--raw"], body, "raw", workdir) as (raw_url, _):
                servers = {"tessera": (tessera_url, tessera_pid),
                           "nocache": (nocache_url, nocache_pid),
                           "cold": (cold_url, cold_pid),
                           "guessed": (guessed_url, guessed_pid),
                           "nometrics": (nometrics_url, nometrics_pid),
                           "yardstick": (yard_url, 0), "raw": (raw_url, 0)}
                data = {"introspect-hit": (intro_hot, basic(fx.gateway)),
                        "introspect-miss": (intro_known, basic(fx.gateway)),
                        "introspect-cold": (intro_known, basic(fx.gateway)),
                        "check-hit": (hot_file, ""), "check-miss": (known_file, ""),
                        "check-guessed": (hot_file, ""),
                        "check-hit-nometrics": (hot_file, ""),
                        "introspect-hit-nometrics": (intro_hot, basic(fx.gateway)),
                        "client-credentials": (cc_file, basic(fx.app)),
                        "refresh": (None, basic(fx.app)), "revoke": (None, basic(fx.app)),
                        "personal-create": (hot_file, ""), "yardstick": (None, ""),
                        "raw": (None, ""),
                        "me": (hot_file, ""), "my-tokens": (hot_file, ""),
                        "introspect-dpop": (intro_dpop, basic(fx.gateway))}
                for sc in MANAGEMENT:
                    data.setdefault(sc.name, (admin_file, ""))
                data["page-api-access"] = (sessions, "")
                for sc in CONSOLE:
                    data.setdefault(sc.name, (admin_session, ""))
                estimate: dict[str, float] = {}

                async def supply(sc: Scenario, seconds: float) -> Path:
                    """Fresh tokens for a scenario that spends one per request: more than the
                    fastest rate seen so far (warmups included) can spend, so no token is sent
                    twice (a second use would be refused, and revoke its grant)."""
                    rate = estimate.get(sc.name, 8000) * 1.5
                    count = int(rate * seconds) + 1000
                    if sc.consumes and sc.consumes.startswith("dpop-"):
                        return write_lines(
                            workdir / f"{sc.name}-{uuid.uuid4().hex[:6]}.txt",
                            await asyncio.to_thread(dpop_lines, sc.consumes[5:], count))
                    kind = SecretKind.refresh if sc.consumes == "refresh" else SecretKind.access
                    tokens = await seed.add_oauth(conn, fx, kind, count)
                    key = "refresh_token" if sc.consumes == "refresh" else "token"
                    prefix = "grant_type=refresh_token&" if sc.consumes == "refresh" else ""
                    return write_lines(workdir / f"{sc.name}-{uuid.uuid4().hex[:6]}.txt",
                                       [f"{prefix}{key}={t}" for t in tokens])

                async def measure(stage: Stage, sc: Scenario, *, record: bool = True,
                                  profile: bool = False) -> wrk.Result:
                    if sc.name != "check-guessed":
                        return await measured(stage, sc, record=record, profile=profile)
                    async with guessing(servers[sc.server][0], GUESSERS) as guesses:
                        result = await measured(stage, sc, record=record, profile=profile)
                    log(f"  beside it: {guesses['count']:,} wrong passwords guessed "
                        f"({guesses['count'] / max(guesses['seconds'], 1e-9):,.0f}/s), "
                        f"answers {dict(guesses['statuses'])}")
                    return result

                async def measured(stage: Stage, sc: Scenario, *, record: bool = True,
                                   profile: bool = False) -> wrk.Result:
                    server_url, pid = servers[sc.server]
                    datafile, auth = data.get(sc.name, (None, ""))
                    path = sc.path.format(plan=fx.plans[0])
                    if args.warmup > 0:
                        if sc.consumes:  # its own tokens: the measured run starts afresh
                            datafile = await supply(sc, args.warmup)
                        warm = await asyncio.to_thread(
                            wrk.run, server_url, path=path, method=sc.method, mode=sc.mode,
                            body=sc.body,
                            basic=auth, datafile=datafile, seconds=args.warmup,
                            connections=args.connections, threads=args.threads,
                            workdir=workdir, show_errors=args.show_errors)
                        estimate[sc.name] = max(estimate.get(sc.name, 0), warm.rps)
                    if sc.consumes:
                        datafile = await supply(sc, args.seconds)
                    stage.rows.setdefault(sc.name, await seed.count_tokens(conn))
                    spy = py_spy(pid, args.seconds, f"{stage.size}-{sc.name}") if profile \
                        else None
                    result = await asyncio.to_thread(
                        wrk.run, server_url, path=path, method=sc.method, mode=sc.mode,
                        body=sc.body,
                        basic=auth, datafile=datafile, seconds=args.seconds,
                        connections=args.connections, threads=args.threads, workdir=workdir,
                        show_errors=args.show_errors)
                    if spy is not None:
                        await asyncio.to_thread(spy.wait, 60)
                    estimate[sc.name] = max(estimate.get(sc.name, 0), result.rps)
                    if record:
                        stage.results.setdefault(sc.name, []).append(result)
                    log(f"{stage.size:>9,} {sc.name:<20} {result.rps:>9,.0f} req/s  "
                        f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
                        f"non-2xx {result.non2xx}  socket errors {result.socket_errors}"
                        + ("  (profiled, not counted)" if not record else ""))
                    return result

                chosen = set(args.only.split(",")) if args.only else None
                for size in args.sizes:
                    current = await seed.count_tokens(conn)
                    if size > current:
                        log(f"growing the tokens table from {current:,} to {size:,}")
                        await seed.add_filler(conn, fx, size - current)
                    await conn.execute("VACUUM ANALYZE tokens")
                    stage = Stage(size)
                    stages.append(stage)
                    for group in (LOOKUPS, MUTATIONS, MANAGEMENT, CONSOLE):
                        todo = [s for s in group if chosen is None or s.name in chosen]
                        yardsticks = [YARDSTICKS[k] for k in YARDSTICKS
                                      if any(s.against == k for s in todo)]
                        for _round in range(args.rounds if todo else 0):
                            for yardstick in yardsticks:
                                await measure(stage, yardstick)
                            for sc in todo:
                                await measure(stage, sc)
                    for prof in args.profile:
                        sc = next(s for s in [*LOOKUPS, *MUTATIONS, *MANAGEMENT, *CONSOLE]
                                  if s.name == prof)
                        await measure(stage, sc, record=False, profile=True)
        await conn.close()
    finally:
        if not args.keep_db:
            await pg_admin(args.pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if args.keep_db:
            log(f"kept database {name} and logs in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    result = table(stages)
    print(result)
    if args.output:
        write_results(Path(args.output), result, args, time.monotonic() - started)
    return 0


def write_results(path: Path, result: str, args: argparse.Namespace, took: float) -> None:
    described = "\n".join(f"- {k}: {v}" for k, v in machine().items())
    command = "make bench" + (f' BENCH_ARGS="{" ".join(sys.argv[1:])}"' if sys.argv[1:] else "")
    notes = HERE / "NOTES.md"
    text = f"""# Benchmark results

Written by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC (took {took / 60:.0f} min).
wrk: {args.connections} connections, {args.threads} thread(s), {args.seconds:g} s per scenario
after {args.warmup:g} s of warm-up, {args.rounds} rounds; the table quotes the median of the
rounds. Loopback only; PostgreSQL, wrk and the servers share the machine (and, here, other
people's work on it: single runs vary by ±20 %, which is why only medians and ratios measured in
the same run are quoted).

## Machine

{described}

## Results

{result}

"tokens" is the number of rows in the `tokens` table when the scenario started (issuance,
refresh and revocation add the rows they spend). The cache-miss rows are served by a second
Tessera started with `TESSERA_TOKEN_CACHE_SIZE=0`, so every request reads the database; the
"token not cached" row by a third with `TESSERA_TOKEN_CACHE_SIZE=1`, whose one cached client
is the gateway asking, while the 10,000 tokens it is asked about evict each other.
"""
    if notes.exists():
        text += "\n" + notes.read_text()
    path.write_text(text)
    log(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds before")
    parser.add_argument("--rounds", type=int, default=3, help="runs per scenario (median)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="the servers' event loop (tessera serve --loop), yardstick's too")
    # One wrk thread: on this 2-core machine a second one competes with the server for a core
    # and its own scheduling delays land in the latencies (yardstick, 3 runs of 5 s each way:
    # p99 59-213 ms with 2 threads, 13-18 ms with 1, and no fewer requests/s with 1).
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--pool", type=int, default=10, help="TESSERA_DB_POOL_SIZE")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[10_000, 1_000_000], help="token counts, e.g. 10000,1000000")
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--profile", type=lambda s: s.split(","), default=[],
                        help="scenarios to profile with py-spy (an extra, uncounted run) into "
                             "test-artifacts/profiles/")
    parser.add_argument("--pg", default=os.environ.get(
        "TESSERA_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"),
                        help="where to write the table ('' for nowhere)")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--show-errors", action="store_true",
                        help="print the first refusals of each run (diagnosis; slows wrk)")
    args = parser.parse_args(argv)
    for host in (args.pg,):
        if "127.0.0.1" not in host and "localhost" not in host:
            raise SystemExit("the benchmark runs on loopback only")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
