"""How long one worker cycle takes over many tokens (run by hand; not a test).

    .venv/bin/python -m bench.worker_cycle                 # 1,000,000 tokens
    .venv/bin/python -m bench.worker_cycle --tokens 200000

Creates a fresh PostgreSQL database, migrates it, seeds plans, users and tokens with
`INSERT … SELECT generate_series` (personal tokens generated uniformly over the last two years,
a fifth of them OAuth access tokens with a one-hour lifetime), then times worker cycles on a
frozen clock, mail going to a sink that only counts:

1. the first cycle: marks every token already expired, writes the notices due (as on a first
   deployment over an existing database);
2. the next cycle, with nothing new, before and after VACUUM ANALYZE (autovacuum's work after
   the mass update): the steady state, every `worker_interval_seconds`;
3. a cycle one minute later: what one minute of time passing costs;
4. a cycle after shortening the period of a tenth of the plans (a policy change).

The database is dropped at the end unless `--keep`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg

from app.cli import migrate
from app.clock import FrozenClock
from app.config import Settings
from app.db import make_engine, make_sessionmaker
from app.notifications.messages import Email
from app.worker.jobs import Context
from app.worker.loop import CycleReport, run_cycle

PG = os.environ.get("TESSERA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


class SinkMailer:
    """Accepts every message at once: the cycle's own cost, without an SMTP server's."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, email: Email) -> None:
        self.sent += 1

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[SinkMailer]:
        yield self


async def seed(dsn: str, *, tokens: int, plans: int, users_per_plan: int,
               now: datetime) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        t0 = time.perf_counter()
        # Plans: 70 % with 90 days, 20 % with 1 year, 10 % with no period.
        await conn.execute("""
            INSERT INTO plans (id, name, expiration_value, expiration_unit, policy_updated_at,
                               created_at)
            SELECT gen_random_uuid(), 'bench-' || lpad(g::text, 7, '0'),
                   CASE WHEN g % 10 < 7 THEN 90 WHEN g % 10 < 9 THEN 1 END,
                   CASE WHEN g % 10 < 7 THEN 'days' WHEN g % 10 < 9 THEN 'years' END,
                   $2::timestamptz - interval '3 years', $2::timestamptz - interval '3 years'
            FROM generate_series(0, $1 - 1) AS g""", plans, now)
        await conn.execute("""
            INSERT INTO users (id, plan_id, email, name, role, created_at)
            SELECT gen_random_uuid(), p.id, 'u' || p.name || '-' || u || '@bench.example',
                   'User ' || u, CASE WHEN u = 0 THEN 'admin' ELSE 'member' END,
                   $2::timestamptz - interval '3 years'
            FROM plans p, generate_series(0, $1 - 1) AS u""", users_per_plan, now)
        await conn.execute("""
            CREATE TEMP TABLE owners AS
            SELECT row_number() OVER (ORDER BY u.plan_id, u.id) - 1 AS n, u.id, u.plan_id
            FROM users u""")
        await conn.execute("CREATE UNIQUE INDEX ON owners (n)")
        owners = await conn.fetchval("SELECT count(*) FROM owners")
        await conn.execute("""
            INSERT INTO tokens (id, kind, digest, hint, name, plan_id, user_id, created_by,
                                scopes, issued_at, expires_at)
            SELECT gen_random_uuid(), k.kind, d.digest, right(d.digest, 4),
                   CASE WHEN k.kind = 'personal' THEN 'token ' || g END,
                   o.plan_id, o.id, o.id, '', k.issued_at,
                   CASE WHEN k.kind = 'access' THEN k.issued_at + interval '1 hour' END
            FROM generate_series(0, $1 - 1) AS g
            CROSS JOIN LATERAL (SELECT md5(g::text) || md5('x' || g::text) AS digest) AS d
            CROSS JOIN LATERAL (SELECT
                CASE WHEN g % 5 = 0 THEN 'access' ELSE 'personal' END AS kind,
                $2::timestamptz - (random() * interval '730 days') AS issued_at) AS k
            JOIN owners o ON o.n = (g::bigint * 7919) % $3""", tokens, now, owners)
        await conn.execute("ANALYZE")
        print(f"seeded {tokens:,} tokens, {plans:,} plans, {owners:,} users "
              f"in {time.perf_counter() - t0:.1f} s")
    finally:
        await conn.close()


def _line(label: str, report: CycleReport) -> str:
    jobs = ", ".join(f"{name} {j.seconds:.3f} s {dict(j.stats) if j.stats else ''}".rstrip()
                     for name, j in report.jobs.items())
    return f"{label}: {report.seconds:.3f} s  [{jobs}]"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--plans", type=int, default=1_000)
    parser.add_argument("--users-per-plan", type=int, default=10)
    parser.add_argument("--batch", type=int, default=Settings().worker_batch_size)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()

    name = f"tessera_bench_worker_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(PG)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = f"{PG.rsplit('/', 1)[0]}/{name}"
    url = dsn.replace("postgresql://", "postgresql+asyncpg://")
    try:
        await asyncio.to_thread(migrate, url)
        now = datetime.now(UTC).replace(microsecond=0)
        await seed(dsn, tokens=args.tokens, plans=args.plans,
                   users_per_plan=args.users_per_plan, now=now)
        engine = make_engine(url, pool_size=4)
        clock, mailer = FrozenClock(now), SinkMailer()
        settings = Settings(database_url=url, worker_batch_size=args.batch,
                            issuer="https://tessera.example")
        ctx = Context.create(make_sessionmaker(engine), clock, settings, mailer=mailer)

        conn = await asyncpg.connect(dsn)
        print(_line("1. first cycle (catch-up)", await run_cycle(ctx)))
        print(_line("2. next cycle, nothing new", await run_cycle(ctx)))
        t0 = time.perf_counter()
        await conn.execute("VACUUM ANALYZE tokens")  # what autovacuum does after a mass update
        print(f"   (VACUUM ANALYZE tokens: {time.perf_counter() - t0:.1f} s)")
        print(_line("3. next cycle, nothing new (steady state)", await run_cycle(ctx)))
        clock.advance(minutes=1)
        print(_line("4. one minute later", await run_cycle(ctx)))
        changed = await conn.execute("""
            UPDATE plans SET expiration_value = 30, expiration_unit = 'days',
                             policy_updated_at = $1
            WHERE id IN (SELECT id FROM plans WHERE expiration_unit = 'days'
                         ORDER BY name LIMIT $2)""", clock.now(), max(1, args.plans // 10))
        print(_line(f"5. after a period change ({changed.split()[-1]} plans: 90 -> 30 days)",
                    await run_cycle(ctx)))
        print(_line("6. next cycle, nothing new", await run_cycle(ctx)))
        await conn.close()
        print(f"mail handed to the sink: {mailer.sent:,}")
        await engine.dispose()
    finally:
        if not args.keep:
            admin = await asyncpg.connect(PG)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
        else:
            print(f"kept database {name}")


if __name__ == "__main__":
    asyncio.run(main())
