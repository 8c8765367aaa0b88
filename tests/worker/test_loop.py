"""The worker loop, `tessera worker --once`, and the worker inside `tessera serve`."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter

from app.main import create_app
from app.worker.loop import run_cycle, run_forever
from tests.notifications.support import make_worker, worker_settings


async def _until(predicate, seconds: float = 10.0) -> None:  # noqa: ANN001
    """Wait for a worker cycle on another task (never for the clock: that is frozen)."""
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the worker did not run")


async def test_a_failing_job_does_not_stop_the_others(database, clock) -> None:
    async def broken(_ctx):  # noqa: ANN001, ANN202
        raise RuntimeError("boom")

    async def fine(_ctx):  # noqa: ANN001, ANN202
        return Counter(done=1)

    report = await run_cycle(make_worker(database, clock, None),
                             [("broken", broken), ("fine", fine)])
    assert not report.ok
    assert report.jobs["broken"].error == "RuntimeError: boom"
    assert report.jobs["fine"].stats == {"done": 1}


async def test_run_forever_cycles_until_stopped(database, clock) -> None:
    ctx = make_worker(database, clock, None, worker_interval_seconds=0.01)
    stop, reports = asyncio.Event(), []
    task = asyncio.create_task(run_forever(ctx, stop, on_cycle=reports))
    await _until(lambda: len(reports) >= 2)
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    assert all(r.ok for r in reports)


async def test_serve_runs_the_worker_when_told(database, clock) -> None:
    settings = worker_settings(database, None, run_worker_in_serve=True,
                               worker_interval_seconds=0.01)
    app = create_app(settings, clock=clock, engine=database.engine)
    async with app.router.lifespan_context(app):
        await _until(lambda: len(getattr(app.state, "worker_reports", [])) >= 1)
        assert app.state.worker_reports[0].ok
    off = create_app(worker_settings(database, None), clock=clock, engine=database.engine)
    async with off.router.lifespan_context(off):
        assert not hasattr(off.state, "worker_reports")


def _cli(args: list[str], db: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], text=True,
                          capture_output=True, timeout=120, check=False,
                          env={**os.environ, "TESSERA_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
                               **env})


def test_without_smtp_notices_wait_and_log_only_is_a_choice(tmp_path) -> None:
    """No SMTP host: a notice is never lost. It waits in the outbox (the worker says how many,
    in one line), and `TESSERA_MAIL_LOG_ONLY=true` writes each mail as one log line instead,
    once."""
    db = tmp_path / "first.db"
    assert _cli(["migrate"], db).returncode == 0
    boot = _cli(["bootstrap", "--plan", "First", "--admin-email", "admin@example.com"], db)
    secret = json.loads(boot.stdout)["admin_token"]
    with sqlite3.connect(db) as conn:  # a 1-day period, and a token generated 2 days ago
        conn.execute("UPDATE plans SET expiration_value = 1, expiration_unit = 'days'")
        conn.execute("UPDATE tokens SET issued_at = datetime(issued_at, '-2 days')")
    for _ in range(2):
        run = _cli(["worker", "--once"], db)
        assert run.returncode == 0, run.stderr
        assert "1 notice(s) wait in the outbox: TESSERA_SMTP_HOST is not set" in run.stderr
        assert "admin@example.com" not in run.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status FROM notification_outbox").fetchall() == \
            [("pending",)]
    logged = _cli(["worker", "--once"], db, TESSERA_MAIL_LOG_ONLY="true")
    assert logged.returncode == 0, logged.stderr
    [line] = [x for x in logged.stderr.splitlines() if "mail not sent (log only" in x]
    assert "to admin@example.com:" in line and f"ending in {secret[-4:]} has expired" in line
    assert secret not in logged.stderr and secret not in logged.stdout
    again = _cli(["worker", "--once"], db, TESSERA_MAIL_LOG_ONLY="true")
    assert again.returncode == 0 and "mail not sent" not in again.stderr  # once
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status FROM notification_outbox").fetchall() == \
            [("logged",)]

def test_long_sweeps_say_how_far_they_got(caplog) -> None:
    """A sweep of many batches logs its counts so far at intervals, not only at its end."""
    from collections import Counter

    from app.notifications.sweeps import Progress

    progress = Progress(every=0)
    with caplog.at_level("INFO", logger="tessera.worker"):
        progress.tick("expiry.mark", Counter(marked_expired=500))
        progress.tick("expiry.mark", Counter(marked_expired=1000))
    assert [r.counts for r in caplog.records] == [{"marked_expired": 500},
                                                  {"marked_expired": 1000}]
    quiet = Progress(every=3600)
    with caplog.at_level("INFO", logger="tessera.worker"):
        quiet.tick("expiry.mark", Counter(marked_expired=1))
    assert len(caplog.records) == 2


def test_in_a_terminal_a_long_sweep_keeps_one_line_up_to_date(caplog) -> None:
    """On a terminal (a real pseudo-terminal here) the counts so far are one line, redrawn in
    place, ended when the sweep ends; no log lines meanwhile."""
    import pty
    import time
    from collections import Counter

    from app.notifications.sweeps import Progress

    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as terminal:
        progress = Progress(every=0, stream=terminal)
        assert progress.live
        with caplog.at_level("INFO", logger="tessera.worker"):
            progress.tick("expiry.mark", Counter(marked_expired=500))
            progress.last_shown -= 1  # half a second on, without sleeping
            progress.tick("expiry.mark", Counter(marked_expired=1500))
            progress.close()
        drawn = b""
        deadline = time.monotonic() + 5
        while not drawn.endswith(b"\n") and time.monotonic() < deadline:
            drawn += os.read(master, 4096)
    os.close(master)
    text = drawn.decode()
    assert text.count("\rexpiry.mark: ") == 2 and "marked_expired 1,500 so far" in text
    assert text.endswith("\n") and not caplog.records
