"""`tessera`: run the service and its jobs, migrate, and set up a first plan."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from app.config import SettingsError, get_settings, unknown_variables
from app.db import make_engine


def _project_root() -> Path:
    """Where alembic.ini and migrations/ live: the source tree, or the working directory of an
    installed copy (the Docker image)."""
    for candidate in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (candidate / "alembic.ini").is_file() and (candidate / "migrations").is_dir():
            return candidate
    raise SystemExit("alembic.ini and migrations/ not found; run from the project directory")


def alembic_config(database_url: str | None = None):  # noqa: ANN201
    from alembic.config import Config

    root = _project_root()
    cfg = Config(str(root / "alembic.ini"))
    cfg.set_main_option("script_location", str(root / "migrations"))
    if database_url:
        cfg.attributes["database_url"] = database_url
    return cfg


def migrate(database_url: str | None = None, revision: str = "head") -> None:
    """Bring the schema to `revision` (up or down: Alembic); the head by default."""
    from alembic import command

    cfg = alembic_config(database_url)
    if revision != "head":
        current = _current_revision(database_url or get_settings().database_url)
        target = _script(cfg).get_revision(revision)
        if current and _is_ancestor(cfg, target.revision, current):
            command.downgrade(cfg, revision)
            return
    command.upgrade(cfg, revision)


def _script(cfg):  # noqa: ANN001, ANN202
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(cfg)


def _is_ancestor(cfg, older: str, newer: str) -> bool:  # noqa: ANN001
    """`older` lies below `newer` in the migration history."""
    return older != newer and any(r.revision == older
                                  for r in _script(cfg).walk_revisions(base=older, head=newer))


def _current_revision(database_url: str) -> str | None:
    from app.ops.health import schema_revision

    async def read() -> str | None:
        engine = make_engine(database_url, pool_size=1, connect_timeout=10)
        try:
            return await schema_revision(engine)
        except Exception:  # noqa: BLE001 - no table yet: nothing applied
            return None
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _migrate(args: argparse.Namespace) -> int:
    if args.status:
        cfg = alembic_config()
        head = _script(cfg).get_current_head()
        current = _current_revision(get_settings().database_url)
        print(json.dumps({"database": _redacted(get_settings().database_url),
                          "current": current, "head": head, "up_to_date": current == head}))
        return 0 if current == head else 3
    migrate(revision=args.to)
    return 0


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _bootstrap(args: argparse.Namespace) -> int:
    from app.bootstrap.first_run import bootstrap, howto

    if args.admin_password is not None and len(args.admin_password) < 8:
        raise UsageError("--admin-password: at least 8 characters (as the API requires)")
    result = asyncio.run(bootstrap(get_settings(), plan=args.plan, admin_email=args.admin_email,
                                   admin_password=args.admin_password, if_empty=args.if_empty))
    if result is None:
        print("the database already holds a plan; nothing was created", file=sys.stderr)
        return 0
    print(json.dumps(result, indent=2))
    if args.howto:
        print(howto(result, get_settings().issuer), file=sys.stderr)
    return 0


def _create_operator(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError

    from app.bootstrap.first_run import create_operator

    try:
        print(json.dumps(asyncio.run(create_operator(get_settings(), args.email)), indent=2))
    except IntegrityError:
        raise UsageError(f"an operator with the email {args.email} exists already") from None
    return 0


def _worker(args: argparse.Namespace) -> int:
    from app.ops import logs
    from app.worker.loop import main as worker_main

    settings = get_settings()
    logs.configure(settings.log_level, settings.log_format)
    return asyncio.run(worker_main(settings, once=args.once))


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.ops import logs
    from app.serving import SlowClientGuard

    settings = get_settings()
    if settings.secret_key_is_random and args.workers > 1:
        raise UsageError("TESSERA_SECRET_KEY is not set: each of the --workers would sign "
                         "sign-ins with a key of its own; set one key for all of them")
    if settings.secret_key_is_random and settings.database_url.startswith("postgresql"):
        print("tessera: warning: TESSERA_SECRET_KEY is not set; every replica serving this "
              "database must share one (sign-ins made on one fail on another)", file=sys.stderr)
    _wait_until_ready(settings.database_url, args.wait)
    if args.access_log:  # read by every worker process, which reads its settings anew
        os.environ["TESSERA_ACCESS_LOG"] = "true"
    uvicorn.run("app.main:create_served_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, loop=args.loop, http=SlowClientGuard,
                log_level=settings.log_level, access_log=False,
                log_config=logs.config(settings.log_level, settings.log_format),
                timeout_keep_alive=settings.keep_alive_timeout_seconds,
                # The client's address is the peer's, unless the peer is a trusted proxy: then
                # the last untrusted address of X-Forwarded-For (rule 12 counts by it).
                proxy_headers=bool(settings.trusted_proxies),
                forwarded_allow_ips=settings.trusted_proxies or None)
    return 0


def _wait_until_ready(database_url: str, wait: float) -> None:
    """Refuse to serve a database that cannot be reached or is not migrated (every request
    would fail): one line says why. `--wait` gives it that many seconds to become ready."""
    from app.ops.health import expected_revision

    deadline = time.monotonic() + wait
    while True:
        current = problem = None
        try:
            current = _revision_or_raise(database_url)
        except Exception as exc:  # noqa: BLE001 - said in one line below
            problem = f"cannot reach the database {_redacted(database_url)} ({_reason(exc)})"
        expected = expected_revision()
        if problem is None and expected is not None and current != expected:
            problem = (f"the database {_redacted(database_url)} is at schema "
                       f"{current or 'nothing'}, this version needs {expected}: run "
                       "`tessera migrate`")
        if problem is None:
            return
        if time.monotonic() >= deadline:
            raise UsageError(problem + ("" if wait else " (or start with --wait SECONDS)"))
        time.sleep(1)


def _revision_or_raise(database_url: str) -> str | None:
    from sqlalchemy import text

    async def read() -> str | None:
        engine = make_engine(database_url, pool_size=1, connect_timeout=5, statement_timeout=5)
        try:
            async with engine.connect() as conn:
                try:
                    return (await conn.execute(
                        text("SELECT version_num FROM alembic_version"))).scalar()
                except Exception:  # noqa: BLE001 - reachable, never migrated
                    return None
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {text}"[:200] if text else type(orig).__name__


class UsageError(Exception):
    """A problem the person running the command can fix: said in one line, exit 2."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tessera")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree not installed
        return "unknown"


def parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    top = argparse.ArgumentParser(
        prog="tessera", formatter_class=fmt,
        description="Tessera: OAuth2 authorization and token lifecycle. Every setting is a "
                    "TESSERA_* environment variable (see the README).")
    top.add_argument("--version", action="version", version=f"tessera {_version()}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", formatter_class=fmt, help="serve the HTTP API",
                           description="Serve the HTTP API (uvicorn). Refuses to start on a "
                           "database it cannot reach or that is not migrated.")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--workers", type=int, default=1,
                       help="processes (all need the same TESSERA_SECRET_KEY)")
    serve.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                       help="event loop; under load asyncio's took in 64 new connections "
                            "at once, uvloop's over half a second, their first answers waiting "
                            "as long (README, architecture)")
    serve.add_argument("--access-log", action="store_true",
                       help="log one line per request, with its id, route, status and time "
                            "(TESSERA_ACCESS_LOG)")
    serve.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                       help="wait up to this long for the database to be reachable and "
                            "migrated before serving")
    serve.set_defaults(func=_serve)

    mig = sub.add_parser("migrate", formatter_class=fmt,
                         help="bring the database schema up to date",
                         description="Bring the schema to the head (safe on every start, from "
                         "any number of replicas at once), or to --to REVISION, up or down.")
    mig.add_argument("--status", action="store_true",
                     help="print the current and expected revisions as JSON; exit 3 when "
                          "behind")
    mig.add_argument("--to", default="head", metavar="REVISION",
                     help="a revision (e.g. 0004) to move to, down included")
    mig.set_defaults(func=_migrate)

    boot = sub.add_parser("bootstrap", formatter_class=fmt,
                          help="create a plan with a system admin and a token",
                          description="Create a plan, its system admin and a personal token; "
                          "print them once as JSON.")
    boot.add_argument("--plan", required=True, help="the plan's name")
    boot.add_argument("--admin-email", required=True, help="the admin's email (login)")
    boot.add_argument("--admin-password", help="at least 8 characters; generated when not "
                      "given")
    boot.add_argument("--if-empty", action="store_true",
                      help="only when the database holds no plan yet")
    boot.add_argument("--howto", action="store_true",
                      help="also print curl examples (to stderr)")
    boot.set_defaults(func=_bootstrap)

    op = sub.add_parser("create-operator", formatter_class=fmt,
                        help="create a platform operator and its token")
    op.add_argument("--email", required=True, help="the operator's email")
    op.set_defaults(func=_create_operator)

    work = sub.add_parser("worker", formatter_class=fmt,
                          help="run the background jobs (expiry notices, scheduled "
                          "deactivations); safe on any number of replicas")
    work.add_argument("--once", action="store_true", help="run one cycle and exit")
    work.set_defaults(func=_worker)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        for line in unknown_variables():
            print(f"tessera: warning: {line}", file=sys.stderr)
        get_settings()
        return int(args.func(args) or 0)
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"tessera: {problem}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"tessera: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a database error, said in one line
        from sqlalchemy.exc import DBAPIError, OperationalError

        if isinstance(exc, OperationalError | DBAPIError | OSError | TimeoutError):
            print(f"tessera: {args.command}: the database failed: {_reason(exc)}",
                  file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
