"""Why Tessera's grants are its own async code and not Authlib's (synchronous) server: measured.

Run by hand, never as a test:

    .venv/bin/python -m bench.authlib_choice [--duration 10] [--runs 3] [--conns 16,64]

It creates a throwaway PostgreSQL database, migrates it (`app.cli.migrate`), makes one plan and
one confidential custom integration (through the services), and serves `create_app()` with
uvicorn (uvloop, httptools) in a subprocess on a free loopback port, with two extra routes:

- `/oauth2/authlib-token` -- (b): the same client_credentials grant done by Authlib's
  synchronous `AuthorizationServer` + `ClientCredentialsGrant`, run inside
  `AsyncSession.run_sync(...)`. Its hooks (query_client, client secret check, save_token) use the
  sync Session that run_sync hands over, on the same `integrations` and `tokens` tables, with the
  same rules (review revoked, installation, plan period) and the same SHA-256 digest scheme.
- `/bench/yardstick` -- a bare FastAPI endpoint returning a token-shaped JSON, no database.

(a) is Tessera's own `/oauth2/token`. Before timing, both grants are checked to issue real tokens
that `/oauth2/introspect` reports active, and to refuse wrong secrets and scopes without leaving
rows behind. Then `wrk` drives each route, interleaved, at each connection count; the server's
CPU time per request is read from /proc. Finally py-spy samples the server under (a) and (b).

(c) -- our grant as a sync function under `anyio.to_thread.run_sync` -- is not measured: it needs
a second, synchronous PostgreSQL driver (psycopg) and engine, which the project does not have,
plus a sync copy of the grant and repository code. Not cheap; skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import contextvars
import hmac
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidGrantError, UnauthorizedClientError
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from fastapi import FastAPI, Request
from sqlalchemy import select
from sqlalchemy.orm import Session as SyncSession

from app import credentials
from app.api.deps import AppSettings, Now, Session
from app.api.responses import JSON, NO_STORE
from app.config import Settings
from app.credentials import SecretKind
from app.integrations.access import Access, ReviewStatus, Rule, decide
from app.integrations.models import Installation, Integration
from app.integrations.service import facts_of
from app.oauth2 import grants
from app.oauth2 import scopes as catalogue
from app.oauth2.requests import read_form
from app.tokens import repository
from app.tokens.models import Token
from app.tokens.rules import TokenKind, check

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "bench" / "lua" / "token_post.lua"
PG_HOST = os.environ.get("TESSERA_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

PATH_A = "/oauth2/token"
PATH_B = "/oauth2/authlib-token"
PATH_Y = "/bench/yardstick"
TARGETS = {"a": PATH_A, "b": PATH_B, "yardstick": PATH_Y}
LABELS = {"a": "(a) Tessera async grant, /oauth2/token",
          "b": "(b) Authlib AuthorizationServer in run_sync",
          "yardstick": "yardstick: bare FastAPI JSON"}

# --------------------------------------------------------------------------------------------
# (b): Authlib's synchronous server, adapted to Starlette and to a sync Session from run_sync.
# --------------------------------------------------------------------------------------------

# query_client(client_id) gets no request, so the per-request sync Session reaches the hooks
# through a context variable set inside run_sync.
_SYNC_SESSION: contextvars.ContextVar[SyncSession] = contextvars.ContextVar("authlib_session")
_NO_CLIENT = credentials.digest("no such client")


class AuthlibClient(ClientMixin):
    """ClientMixin over our Integration row (the ORM model implements none of it)."""

    __slots__ = ("integration",)

    def __init__(self, integration: Integration) -> None:
        self.integration = integration

    def get_client_id(self) -> str:
        return self.integration.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.integration.redirect_uris
        return uris[0] if uris else None

    def get_allowed_scope(self, scope: str | None) -> str:
        # Same rule as ours: absent means everything granted; more than granted is refused.
        return catalogue.join(grants.narrow_scope(scope, self.integration.scopes))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.integration.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        stored = self.integration.client_secret_digest
        presented = credentials.digest(client_secret)
        return hmac.compare_digest(presented.encode(), (stored or _NO_CLIENT).encode()) \
            and stored is not None

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return self.integration.confidential and method in ("client_secret_basic",
                                                            "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials" and self.integration.confidential


class StarletteOAuth2Request(OAuth2Request):
    """What Authlib's Flask/Django integrations build, from a Starlette request whose form was
    already read (async) before entering the sync world."""

    def __init__(self, request: Request, form: dict[str, str], now: datetime) -> None:
        super().__init__(request.method, str(request.url), headers=request.headers)
        self.payload = BasicOAuth2Payload(form)
        self._query = request.query_params
        self.now = now

    @property
    def args(self) -> Any:
        return self._query

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data


class TesseraClientCredentials(ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def validate_token_request(self) -> None:
        super().validate_token_request()  # authenticates, checks grant type and scope
        integ: Integration = self.client.integration
        if integ.review_status == ReviewStatus.revoked:
            raise grants.refuse(Access(False, Rule.review_revoked))
        if integ.plan_id is None:
            # The measured case is a plan's own (custom) integration; the installed-plan choice
            # of third-party clients is not ported to this adapter.
            raise UnauthorizedClientError(description="custom integrations only (bench)")
        session = _SYNC_SESSION.get()
        inst = session.execute(select(Installation).where(
            Installation.integration_id == integ.id, Installation.plan_id == integ.plan_id,
        )).scalar_one_or_none()
        access = decide(facts_of(integ), inst.state if inst else None, self.request.now)
        if not access.allowed:
            raise grants.refuse(access)


class TesseraAuthorizationServer(AuthorizationServer):
    def __init__(self, settings: Settings) -> None:
        super().__init__(scopes_supported=list(catalogue.CATALOGUE))
        ttl = settings.access_token_ttl_seconds
        self.register_token_generator("default", BearerTokenGenerator(
            lambda **_kw: credentials.generate(SecretKind.access), None, lambda _c, _g: ttl))
        self.register_grant(TesseraClientCredentials)

    def query_client(self, client_id: str) -> AuthlibClient | None:
        integ = _SYNC_SESSION.get().execute(
            select(Integration).where(Integration.client_id == client_id)).scalar_one_or_none()
        return AuthlibClient(integ) if integ is not None else None

    def save_token(self, token: dict[str, Any], request: StarletteOAuth2Request) -> None:
        session = _SYNC_SESSION.get()
        integ: Integration = request.client.integration
        now = request.now
        secret = token["access_token"]
        row = Token(id=uuid.uuid4(), kind=TokenKind.access.value,
                    digest=credentials.digest(secret), hint=credentials.hint(secret),
                    plan_id=integ.plan_id, integration_id=integ.id, scopes=token["scope"],
                    issued_at=now, expires_at=now + timedelta(seconds=token["expires_in"]))
        session.add(row)
        session.flush()
        # repository.find_by_id is async; a sync hook can only reuse its query.
        stored = repository._stored(tuple(session.execute(
            repository._CHECK_QUERY.where(Token.id == row.id)).first()))
        verdict = check(stored.facts, now)
        if not verdict.active or verdict.expiry is None:
            raise InvalidGrantError(description="the plan's token expiration period leaves no "
                                                "lifetime for a new token")
        token["expires_in"] = int((verdict.expiry - now).total_seconds())

    def create_oauth2_request(self, request: StarletteOAuth2Request) -> OAuth2Request:
        return request  # built beforehand: the body can only be read with await

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> Any:
        return status, body, headers  # turned into a Starlette response outside run_sync

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass  # no signal system here


def _run_authlib(sync_session: SyncSession, server: TesseraAuthorizationServer,
                 request: StarletteOAuth2Request) -> tuple[int, Any, list[tuple[str, str]]]:
    reset = _SYNC_SESSION.set(sync_session)
    try:
        return server.create_token_response(request)
    finally:
        _SYNC_SESSION.reset(reset)


_YARD_BODY = {"access_token": credentials.generate(SecretKind.access), "token_type": "Bearer",
              "expires_in": 3600, "scope": "profile tokens:read data:read"}


def bench_app() -> FastAPI:
    """uvicorn factory: Tessera's app plus the (b) route and the yardstick."""
    from app.main import create_app

    settings = Settings()
    app = create_app(settings)
    server = TesseraAuthorizationServer(settings)

    async def authlib_token(request: Request, session: Session, settings: AppSettings,
                            now: Now) -> JSON:
        # The same dependencies as /oauth2/token (FastAPI runs the sync ones in its threadpool),
        # so both routes pay the same for them.
        form = await read_form(request)
        oauth_request = StarletteOAuth2Request(request, form, now)
        status, body, headers = await session.run_sync(_run_authlib, server, oauth_request)
        if status >= 400:
            # Authlib turns errors into responses, so session_scope would commit: roll back.
            await session.rollback()
        return JSON(body, status_code=status,
                    headers={k: v for k, v in headers if k.lower() != "content-type"})

    async def yardstick() -> JSON:
        return JSON(_YARD_BODY, headers=NO_STORE)

    app.add_api_route(PATH_B, authlib_token, methods=["POST"], include_in_schema=False)
    app.add_api_route(PATH_Y, yardstick, methods=["POST"], include_in_schema=False)
    return app


# --------------------------------------------------------------------------------------------
# The throwaway database and its one plan and integration.
# --------------------------------------------------------------------------------------------


def _asyncpg_url(name: str) -> str:
    base = PG_HOST.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


async def _pg(sql: str, *args: Any, database: str | None = None) -> Any:
    import asyncpg

    dsn = PG_HOST if database is None else PG_HOST.rsplit("/", 1)[0] + "/" + database
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


@dataclass
class Seeded:
    plan_id: uuid.UUID
    client_id: str
    client_secret: str

    @property
    def basic(self) -> str:
        return base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()


async def seed(url: str) -> Seeded:
    from app.db import make_engine, make_sessionmaker, session_scope
    from app.integrations import service as integrations
    from app.integrations.schemas import IntegrationIn
    from app.plans.models import Plan

    now = datetime.now(UTC)
    engine = make_engine(url, pool_size=1)
    try:
        async with session_scope(make_sessionmaker(engine)) as session:
            plan_id = uuid.uuid4()
            session.add(Plan(id=plan_id, name="Bench", created_at=now))
            await session.flush()
            body = IntegrationIn(name="Bench client", redirect_uris=["https://app.example/cb"],
                                 scopes=["profile", "tokens:read", "data:read"],
                                 confidential=True, can_introspect=True)
            integ, secret = await integrations.create_custom(
                session, plan_id, body, actor="bench", user_id=None, now=now)
    finally:
        await engine.dispose()
    assert secret is not None
    return Seeded(plan_id, integ.client_id, secret)


# --------------------------------------------------------------------------------------------
# The server subprocess, HTTP checks, wrk, py-spy.
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(url: str, port: int, log: Path, pool_size: int | None) -> subprocess.Popen:
    env = {**os.environ, "TESSERA_DATABASE_URL": url, "TESSERA_LOG_LEVEL": "warning"}
    if pool_size is not None:
        env["TESSERA_DB_POOL_SIZE"] = str(pool_size)
    cmd = [sys.executable, "-m", "uvicorn", "bench.authlib_choice:bench_app", "--factory",
           "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http",
           "httptools", "--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited; see {log}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not answer /healthz within 30 s; see {log}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def post(base: str, path: str, form: dict[str, str],
         basic: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if basic:
        headers["Authorization"] = f"Basic {basic}"
    req = urllib.request.Request(base + path, urllib.parse.urlencode(form).encode(), headers,
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def count_tokens(db: str) -> int:
    return asyncio.run(_pg("SELECT count(*) FROM tokens", database=db))


def introspect_until_active(base: str, seeded: Seeded, token: str) -> tuple[dict, int]:
    """FastAPI closes the request's session (the COMMIT) after the response is sent, so a token
    can reach the client before its row is visible: retry for up to a second."""
    for attempt in range(1, 21):
        status, seen = post(base, "/oauth2/introspect", {"token": token}, seeded.basic)
        assert status == 200, (status, seen)
        if seen["active"]:
            return seen, attempt
        time.sleep(0.05)
    return seen, 20


def settled_count(db: str) -> int:
    time.sleep(0.5)  # see introspect_until_active: the last COMMIT may still be on its way
    return count_tokens(db)


def verify(base: str, seeded: Seeded, db: str) -> list[str]:
    """Both grants issue real tokens our introspection calls active, and refuse alike."""
    lines = []
    wrong = base64.b64encode(f"{seeded.client_id}:tss_wrong".encode()).decode()
    for key in ("a", "b"):
        path = TARGETS[key]
        status, body = post(base, path, {"grant_type": "client_credentials"}, seeded.basic)
        assert status == 200, (key, status, body)
        assert set(body) == {"access_token", "token_type", "expires_in", "scope"}, body
        assert body["token_type"] == "Bearer" and 3500 < body["expires_in"] <= 3600, body
        assert credentials.kind_of(body["access_token"]) is SecretKind.access, body
        assert body["scope"] == "profile tokens:read data:read", body
        seen, _ = introspect_until_active(base, seeded, body["access_token"])
        assert seen["active"] is True, (key, seen)
        assert seen["client_id"] == seeded.client_id, seen
        assert seen["plan_id"] == str(seeded.plan_id) and seen["token_kind"] == "access", seen
        assert seen["scope"] == body["scope"], seen
        lines.append(f"{key}: 200, introspect active=true, client_id/plan_id/scope match, "
                     f"expires_in={body['expires_in']}")
        late = 0
        for _ in range(20):
            status, body = post(base, path, {"grant_type": "client_credentials"},
                                seeded.basic)
            assert status == 200, (key, status, body)
            seen, attempts = introspect_until_active(base, seeded, body["access_token"])
            assert seen["active"] is True, (key, seen)
            late += attempts > 1
        lines.append(f"{key}: introspected at once after issuance, {late} of 20 tokens were "
                     "not yet active on the first try (COMMIT after the response)")
        status, narrowed = post(base, path, {"grant_type": "client_credentials",
                                             "scope": "profile"}, seeded.basic)
        assert status == 200 and narrowed["scope"] == "profile", (key, narrowed)
        status, posted = post(base, path, {"grant_type": "client_credentials",
                                           "client_id": seeded.client_id,
                                           "client_secret": seeded.client_secret})
        assert status == 200, (key, "client_secret_post", posted)
        before = settled_count(db)
        status, err = post(base, path, {"grant_type": "client_credentials"}, wrong)
        assert status == 401 and err["error"] == "invalid_client", (key, status, err)
        status, err = post(base, path, {"grant_type": "client_credentials",
                                        "scope": "plan:admin"}, seeded.basic)
        assert status == 400 and err["error"] == "invalid_scope", (key, status, err)
        assert settled_count(db) == before, (key, "a refused request left a row")
        lines.append(f"{key}: scope narrowing, client_secret_post, 401 invalid_client, "
                     "400 invalid_scope (no row left) ok")
    return lines


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    target: str
    conns: int
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_req: float
    rows: int | None
    raw: dict[str, Any] = field(default_factory=dict)


def wrk(base: str, path: str, conns: int, seconds: int, basic: str) -> dict[str, Any]:
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA),
           base + path]
    out = subprocess.run(cmd, env={**os.environ, "BENCH_BASIC": basic}, capture_output=True,
                         text=True, timeout=seconds + 60, check=True).stdout
    match = re.search(r"^BENCH (\{.*\})$", out, re.M)
    if not match:
        raise RuntimeError(f"no result line from wrk:\n{out}")
    return json.loads(match.group(1))


def measure(base: str, pid: int, target: str, conns: int, rnd: int, seconds: int,
            seeded: Seeded, db: str) -> Run:
    rows_before = count_tokens(db) if target != "yardstick" else None
    cpu_before = cpu_seconds(pid)
    raw = wrk(base, TARGETS[target], conns, seconds, seeded.basic)
    time.sleep(1)  # let requests cut off by wrk's end finish before counting and the next run
    cpu = cpu_seconds(pid) - cpu_before
    rows = count_tokens(db) - rows_before if rows_before is not None else None
    n = raw["requests"]
    return Run(target, conns, rnd, n / (raw["duration_us"] / 1e6), raw["p50_us"] / 1000,
               raw["p99_us"] / 1000, cpu / n * 1e6 if n else float("nan"), rows, raw)


def profile(base: str, pid: int, target: str, seconds: int, seeded: Seeded,
            out: Path) -> Path | None:
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        return None
    load = subprocess.Popen(["wrk", "-t1", "-c64", f"-d{seconds + 4}s", "-s", str(LUA),
                             base + TARGETS[target]], env={**os.environ,
                                                           "BENCH_BASIC": seeded.basic},
                            stdout=subprocess.DEVNULL)
    try:
        time.sleep(2)
        path = out / f"pyspy-{target}.txt"
        subprocess.run([str(spy), "record", "-p", str(pid), "-d", str(seconds), "-r", "200",
                        "--threads", "-f", "raw", "-o", str(path)], check=True, capture_output=True,
                       timeout=seconds + 60)
        return path
    finally:
        load.wait(timeout=seconds + 60)


_CATEGORIES = (  # py-spy names files relative to their sys.path entry
    ("authlib", ("authlib/",)),
    ("bench adapter (hooks, request object)", ("bench/authlib_choice.py",)),
    ("app/ (Tessera code)", ("app/",)),
    ("sqlalchemy", ("sqlalchemy/",)),
    ("asyncpg", ("asyncpg/",)),
    ("starlette + fastapi", ("starlette/", "fastapi/")),
    ("uvicorn + asyncio", ("uvicorn/", "asyncio/", "uvloop/")),
)


def _category(frame: str) -> str:
    for name, prefixes in _CATEGORIES:
        if any(f"({p}" in frame or f"/{p}" in frame for p in prefixes):
            return name
    return "other"


def summarize_profile(path: Path) -> dict[str, Any]:
    """The event loop thread only (py-spy --threads): FastAPI's threadpool workers, which run the
    sync dependencies, mostly wait. A greenlet's frames show as their own root stack, so
    'inclusive' understates callers above run_sync/greenlet_spawn; 'self' is exact."""
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    self_: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or "MainThread" not in frames[0]:
            continue
        n = int(count)
        total += n
        frames = frames[1:] or ["(idle)"]
        for name in {_category(f) for f in frames}:
            inclusive[name] += n
        self_[_category(frames[-1])] += n
        leaf[re.sub(r"\((?:.*?site-packages/|.*?/work/main/)", "(",
                    re.sub(r":\d+\)$", ")", frames[-1]))] += n

    def pct(c: int) -> float:
        return round(100 * c / total, 1)

    names = [k for k, _ in _CATEGORIES] + ["other"]
    return {"samples": total,
            "inclusive_pct": {k: pct(inclusive[k]) for k in names} if total else {},
            "self_pct": {k: pct(self_[k]) for k in names} if total else {},
            "top_leaf_pct": [(f, pct(n)) for f, n in leaf.most_common(12)] if total else []}


def machine() -> dict[str, str]:
    info = {"nproc": str(os.cpu_count()), "python": platform.python_version()}
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    info["cpu"] = model.group(1) if model else "?"
    mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    info["memory"] = f"{int(mem.group(1)) / 1024 / 1024:.1f} GiB" if mem else "?"
    info["load_before"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    from importlib.metadata import version

    info["versions"] = ", ".join(f"{p} {version(p)}" for p in (
        "Authlib", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "SQLAlchemy",
        "asyncpg"))
    info["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout \
        .splitlines()[0].split(" Copyright")[0]
    info["postgres"] = asyncio.run(_pg("SHOW server_version"))
    import app

    info["app"] = str(Path(app.__file__).parent)
    git = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                         capture_output=True, text=True)
    info["source"] = git.stdout.strip() if git.returncode == 0 else \
        os.environ.get("TESSERA_BENCH_SOURCE", "not a git checkout")
    return info


def med(values: list[float]) -> float:
    return statistics.median(values)


def report(runs: list[Run], conns: list[int]) -> tuple[str, dict[str, Any]]:
    rows = ["| conns | route | req/s (median) | p50 ms | p99 ms | server CPU µs/req | "
            "req/s per run | b/a req/s | ÷ yardstick req/s |",
            "|---|---|---|---|---|---|---|---|---|"]
    summary: dict[str, Any] = {}
    for c in conns:
        per = {t: [r for r in runs if r.conns == c and r.target == t] for t in TARGETS}
        m = {t: {"rps": med([r.rps for r in rs]), "p50": med([r.p50_ms for r in rs]),
                 "p99": med([r.p99_ms for r in rs]),
                 "cpu": med([r.cpu_us_per_req for r in rs]),
                 "runs": [round(r.rps) for r in rs]} for t, rs in per.items()}
        summary[str(c)] = m
        for t in ("a", "b", "yardstick"):
            ratio_b = f"{m['b']['rps'] / m['a']['rps']:.2f}" if t == "b" else ""
            ratio_y = f"{m[t]['rps'] / m['yardstick']['rps']:.2f}" if t != "yardstick" else "1"
            rows.append(f"| {c} | {LABELS[t]} | {m[t]['rps']:.0f} | {m[t]['p50']:.1f} | "
                        f"{m[t]['p99']:.1f} | {m[t]['cpu']:.0f} | "
                        f"{', '.join(map(str, m[t]['runs']))} | {ratio_b} | {ratio_y} |")
        summary[str(c)]["b_over_a"] = {
            "rps": m["b"]["rps"] / m["a"]["rps"], "p50": m["b"]["p50"] / m["a"]["p50"],
            "p99": m["b"]["p99"] / m["a"]["p99"], "cpu": m["b"]["cpu"] / m["a"]["cpu"]}
        # b and a of one round ran next to each other in time: their ratio drifts less.
        pairs = [(a, b) for a in per["a"] for b in per["b"] if a.round == b.round]
        summary[str(c)]["paired_b_over_a"] = {
            key: sorted(getattr(b, attr) / getattr(a, attr) for a, b in pairs)
            for key, attr in (("rps", "rps"), ("p50", "p50_ms"), ("p99", "p99_ms"),
                              ("cpu", "cpu_us_per_req"))}
    paired = ["", "| conns | b/a per round, adjacent in time | median | min | max |",
              "|---|---|---|---|---|"]
    for c in conns:
        for key, name in (("rps", "req/s"), ("p50", "p50"), ("p99", "p99"),
                          ("cpu", "server CPU µs/req")):
            v = summary[str(c)]["paired_b_over_a"][key]
            paired.append(f"| {c} | {name} | {med(v):.2f} | {v[0]:.2f} | {v[-1]:.2f} |")
    return "\n".join(rows + paired), summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.authlib_choice", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="runs per route and conns")
    parser.add_argument("--conns", default="16,64", help="wrk connection counts")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per route")
    parser.add_argument("--profile-seconds", type=int, default=6, help="0: no py-spy")
    parser.add_argument("--pool-size", type=int, help="TESSERA_DB_POOL_SIZE for the server "
                        "(default: the project's default, 10; overflow is as many again)")
    parser.add_argument("--out", type=Path, help="where to keep results (default: a temp dir)")
    args = parser.parse_args(argv)
    conns = [int(c) for c in args.conns.split(",")]
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    out = args.out or Path(tempfile.mkdtemp(prefix="authlib-choice-"))
    out.mkdir(parents=True, exist_ok=True)

    started = datetime.now(UTC)
    info = machine()
    db = f"tessera_authlib_choice_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_pg(f'CREATE DATABASE "{db}"'))
    proc = None
    try:
        url = _asyncpg_url(db)
        from app.cli import migrate

        asyncio.run(asyncio.to_thread(migrate, url))
        seeded = asyncio.run(seed(url))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = start_server(url, port, out / "server.log", args.pool_size)
        print(f"database {db}, server pid {proc.pid} on {base}", flush=True)
        for line in verify(base, seeded, db):
            print("verified", line, flush=True)

        runs: list[Run] = []
        for c in conns:
            for target in TARGETS:
                wrk(base, TARGETS[target], c, args.warmup, seeded.basic)
            order = ["a", "b", "yardstick"]
            for i in range(args.runs):
                for target in order[i % 3:] + order[:i % 3]:  # rotate to spread drift
                    run = measure(base, proc.pid, target, c, i, args.duration, seeded, db)
                    runs.append(run)
                    print(f"c={c} run {i + 1} {target:9} {run.rps:8.0f} req/s  p50 "
                          f"{run.p50_ms:6.1f} ms  p99 {run.p99_ms:6.1f} ms  cpu "
                          f"{run.cpu_us_per_req:5.0f} µs/req  rows {run.rows}  non2xx "
                          f"{run.raw['non2xx']} errors {run.raw['read_errors']}"
                          f"/{run.raw['timeouts']}", flush=True)
        profiles = {}
        if args.profile_seconds > 0:
            for target in ("a", "b"):
                path = profile(base, proc.pid, target, args.profile_seconds, seeded, out)
                if path is not None:
                    profiles[target] = summarize_profile(path)
        info["load_after"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    finally:
        if proc is not None:
            stop_server(proc)
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))

    table, summary = report(runs, conns)
    bad = [r for r in runs if r.raw["non2xx"] or r.raw["read_errors"] or r.raw["timeouts"]
           # each wrk connection has at most one request in flight when a run starts or ends
           or (r.rows is not None and abs(r.rows - r.raw["requests"]) > 2 * r.conns)]
    result = {"started": started.isoformat(timespec="seconds"),
              "finished": datetime.now(UTC).isoformat(timespec="seconds"),
              "command": " ".join(["python -m bench.authlib_choice", *(argv or sys.argv[1:])]),
              "duration_s": args.duration, "runs": args.runs, "machine": info,
              "summary": summary, "profiles": profiles,
              "suspect_runs": [r.__dict__ for r in bad],
              "all_runs": [r.__dict__ for r in runs]}
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "table.md").write_text(table + "\n")
    print()
    print(table)
    print()
    for target, prof in profiles.items():
        print(f"py-spy {target}: {prof['samples']} event-loop-thread samples")
        print(f"    self %:      {json.dumps(prof['self_pct'])}")
        print(f"    inclusive %: {json.dumps(prof['inclusive_pct'])}")
        for frame, pct in prof["top_leaf_pct"]:
            print(f"    {pct:5.1f}%  {frame}")
    print(f"\nmachine: {json.dumps(info)}")
    print(f"suspect runs (errors, non-2xx, or rows != requests): {len(bad)}")
    took = round((datetime.now(UTC) - started).total_seconds())
    print(f"results: {out}/results.json (took {took} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
