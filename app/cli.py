"""`tessera`: run the service and its jobs, migrate, and set up a first plan."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from app.config import get_settings


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


def migrate(database_url: str | None = None) -> None:
    from alembic import command

    command.upgrade(alembic_config(database_url), "head")


def _bootstrap(args: argparse.Namespace) -> int:
    from app.bootstrap.first_run import bootstrap, howto

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
    from app.bootstrap.first_run import create_operator

    print(json.dumps(asyncio.run(create_operator(get_settings(), args.email)), indent=2))
    return 0


def _worker(args: argparse.Namespace) -> int:
    import logging

    from app.worker.loop import main as worker_main

    logging.basicConfig(level=get_settings().log_level.upper(),
                        format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    return asyncio.run(worker_main(get_settings(), once=args.once))


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.serving import SlowClientGuard

    settings = get_settings()
    uvicorn.run("app.main:create_served_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, loop="uvloop", http=SlowClientGuard,
                log_level=settings.log_level, access_log=args.access_log,
                timeout_keep_alive=settings.keep_alive_timeout_seconds,
                # The client's address is the peer's, unless the peer is a trusted proxy: then
                # the last untrusted address of X-Forwarded-For (rule 12 counts by it).
                proxy_headers=bool(settings.trusted_proxies),
                forwarded_allow_ips=settings.trusted_proxies or None)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tessera", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--access-log", action="store_true")
    serve.set_defaults(func=_serve)

    mig = sub.add_parser("migrate", help="bring the database schema up to date")
    mig.set_defaults(func=lambda _a: migrate() or 0)

    boot = sub.add_parser("bootstrap", help="create a plan with a system admin and a token")
    boot.add_argument("--plan", required=True)
    boot.add_argument("--admin-email", required=True)
    boot.add_argument("--admin-password", help="generated when not given")
    boot.add_argument("--if-empty", action="store_true",
                      help="only when the database holds no plan yet")
    boot.add_argument("--howto", action="store_true",
                      help="also print curl examples (to stderr)")
    boot.set_defaults(func=_bootstrap)

    op = sub.add_parser("create-operator", help="create a platform operator and its token")
    op.add_argument("--email", required=True)
    op.set_defaults(func=_create_operator)

    work = sub.add_parser("worker", help="run the background jobs (expiry notices, scheduled "
                          "deactivations); safe on any number of replicas")
    work.add_argument("--once", action="store_true", help="run one cycle and exit")
    work.set_defaults(func=_worker)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
