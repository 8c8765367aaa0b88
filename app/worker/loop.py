"""`tessera worker`: run every job once per cycle, then wait `worker_interval_seconds`.

Any number of processes may run it (and `tessera serve` with TESSERA_RUN_WORKER_IN_SERVE=true);
the jobs coordinate through the database. One job failing (say, the database went away) is
logged and does not stop the others or the next cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import Clock, SystemClock
from app.config import Settings
from app.db import make_engine, make_sessionmaker
from app.ops import metrics
from app.worker.jobs import JOBS, Context, Job

log = logging.getLogger("tessera.worker")

# On shutdown, how long a cycle in progress may go on before it is cancelled.
STOP_GRACE_SECONDS = 10.0


@dataclass
class JobReport:
    stats: Counter[str]
    seconds: float
    error: str | None = None


@dataclass
class CycleReport:
    jobs: dict[str, JobReport] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(j.error is None for j in self.jobs.values())

    def total(self, name: str) -> int:
        return sum(j.stats.get(name, 0) for j in self.jobs.values())


async def run_cycle(ctx: Context, jobs: list[tuple[str, Job]] | None = None) -> CycleReport:
    report = CycleReport()
    started = time.perf_counter()
    for name, job in jobs if jobs is not None else JOBS:
        t0 = time.perf_counter()
        try:
            stats, error = await job(ctx), None
        except Exception as exc:  # one job's failure must not stop the others
            log.exception("worker job %s failed", name)
            stats, error = Counter(), f"{type(exc).__name__}: {exc}"
        report.jobs[name] = JobReport(stats, time.perf_counter() - t0, error)
        for outcome, count in stats.items():
            metrics.worker_items.inc(name, outcome, amount=count)
        if stats:
            log.info("%s: %s (%.3f s)", name, dict(stats), report.jobs[name].seconds,
                     extra={"job": name, "counts": dict(stats),
                            "seconds": round(report.jobs[name].seconds, 3)})
    report.seconds = time.perf_counter() - started
    metrics.WORKER_CYCLE.observe(report.seconds)
    return report


async def run_forever(ctx: Context, stop: asyncio.Event, *,
                      on_cycle: list[CycleReport] | None = None) -> None:
    """Cycle until `stop` is set; a cycle in progress finishes first."""
    while not stop.is_set():
        report = await run_cycle(ctx)
        if on_cycle is not None:
            on_cycle.append(report)
            del on_cycle[:-10]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=ctx.settings.worker_interval_seconds)


async def _finish(task: asyncio.Task[None]) -> None:
    """Let a cycle in progress finish, for a while. Cancelling one is safe: every change is in
    a transaction, and claimed mail goes out once its lease runs out."""
    try:
        await asyncio.wait_for(task, timeout=STOP_GRACE_SECONDS)
    except TimeoutError:
        log.warning("worker stopped in the middle of a cycle")


@contextlib.asynccontextmanager
async def in_background(maker: async_sessionmaker[AsyncSession], clock: Clock,
                        settings: Settings) -> AsyncIterator[list[CycleReport]]:
    """Run the worker as a task for the duration of the block (the app's lifespan)."""
    stop = asyncio.Event()
    reports: list[CycleReport] = []
    task = asyncio.create_task(run_forever(Context.create(maker, clock, settings), stop,
                                           on_cycle=reports), name="tessera-worker")
    try:
        yield reports
    finally:
        stop.set()
        await _finish(task)


async def main(settings: Settings, *, once: bool = False) -> int:
    engine = make_engine(settings.database_url, pool_size=min(settings.db_pool_size, 5))
    ctx = Context.create(make_sessionmaker(engine), SystemClock(), settings)
    try:
        if once:
            return 0 if (await run_cycle(ctx)).ok else 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("worker %s started; a cycle every %s s", ctx.worker_id,
                 settings.worker_interval_seconds)
        task = asyncio.create_task(run_forever(ctx, stop), name="tessera-worker")
        await stop.wait()
        await _finish(task)
        return 0
    finally:
        await engine.dispose()
