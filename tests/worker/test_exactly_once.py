"""Rule 5's "exactly one notice", with several workers, a killed worker and an SMTP server in
trouble. A real SMTP server, both databases; the clock moves, nothing sleeps."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest

from app.notifications import outbox
from app.worker import jobs
from app.worker.loop import run_cycle
from tests.helpers import set_period
from tests.notifications.support import (
    add_owners,
    cycle,
    free_port,
    issue,
    make_worker,
    outbox_rows,
)

pytestmark = pytest.mark.asyncio

SWEEPS = [("expiry.mark", jobs.mark_expired),
          ("notices.expiring", jobs.enqueue_expiring)]


async def _users_with_tokens(database, plan, n: int):  # noqa: ANN001, ANN202
    users = await add_owners(database, plan, n)
    tokens = [await issue(database, plan, user_id=u.user_id, name=f"t{i}")
              for i, u in enumerate(users)]
    return users, tokens


async def test_two_concurrent_workers_send_each_notice_once(client, plan, clock, database,
                                                            smtp) -> None:
    """Two workers, each with its own sessions, run their cycles at the same time. On
    PostgreSQL they split the rows with FOR UPDATE SKIP LOCKED; SQLite has one writer at a time,
    so there the cycles interleave statement by statement rather than truly in parallel, and
    the claiming UPDATE's re-check keeps them apart."""
    users, tokens = await _users_with_tokens(database, plan, 30)
    await set_period(client, plan, 10, "days")
    clock.advance(days=5)  # all inside the 7-day window
    a = make_worker(database, clock, smtp, worker_batch_size=3)
    b = make_worker(database, clock, smtp, worker_batch_size=3)
    assert a.worker_id != b.worker_id

    reports = await asyncio.gather(run_cycle(a), run_cycle(b))
    clock.advance(days=5)  # all of them expired
    reports += await asyncio.gather(run_cycle(a), run_cycle(b), run_cycle(a))
    assert all(r.ok for r in reports), [r.jobs for r in reports]

    for user, token in zip(users, tokens, strict=True):
        kinds = Counter("expired" if "has expired" in r.subject else "expiring"
                        for r in smtp.to(user.email))
        assert kinds == {"expiring": 1, "expired": 1}, user.email
        assert [r.status for r in await outbox_rows(database, token.id)] == ["sent", "sent"]
    if database.backend == "postgresql":
        # Both took part: the rows were split between them, not sent by one alone.
        sent = [r.jobs["notices.deliver"].stats["sent"] for r in reports]
        assert sent[0] + sent[2] + sent[4] > 0 and sent[1] + sent[3] > 0, sent


async def test_concurrent_claims_take_disjoint_rows(client, plan, clock, database,
                                                    smtp) -> None:
    """FOR UPDATE SKIP LOCKED (PostgreSQL), or the claiming UPDATE's re-check (SQLite): rows
    claimed at the same moment by two workers go to one of them each."""
    _users, tokens = await _users_with_tokens(database, plan, 12)
    await set_period(client, plan, 7, "days")
    a, b = (make_worker(database, clock, smtp) for _ in range(2))
    await run_cycle(a, SWEEPS)
    lease = timedelta(minutes=5)
    taken = await asyncio.gather(*(
        outbox.claim(w.maker, now=clock.now(), worker_id=w.worker_id, limit=5, lease=lease)
        for w in (a, b, a, b)))
    ids = [m.id for t in taken for m in t.messages]
    assert len(ids) == len(set(ids))  # no row handed out twice
    holder = {m.id: w.worker_id for t, w in zip(taken, (a, b, a, b), strict=True)
              for m in t.messages}
    for token in tokens:
        [row] = await outbox_rows(database, token.id)
        if row.id in holder:
            assert row.claimed_by == holder[row.id]


async def test_concurrent_sweeps_write_each_notice_once(client, plan, clock, database,
                                                        smtp) -> None:
    users, tokens = await _users_with_tokens(database, plan, 30)
    await set_period(client, plan, 3, "days")
    workers = [make_worker(database, clock, smtp, worker_batch_size=4) for _ in range(4)]
    clock.advance(days=1)
    await asyncio.gather(*(run_cycle(w, SWEEPS) for w in workers))
    clock.advance(days=3)
    await asyncio.gather(*(run_cycle(w, SWEEPS) for w in workers))
    for token in tokens:
        assert sorted(r.kind for r in await outbox_rows(database, token.id)) == \
            ["expired", "expiring"]


async def test_a_worker_killed_between_claiming_and_sending_loses_nothing(
        client, plan, clock, database, smtp) -> None:
    users, tokens = await _users_with_tokens(database, plan, 3)
    await set_period(client, plan, 7, "days")
    killed = make_worker(database, clock, smtp)
    await run_cycle(killed, SWEEPS)  # the notices are in the outbox
    lease = timedelta(minutes=5)
    taken = await outbox.claim(killed.maker, now=clock.now(), worker_id=killed.worker_id,
                               limit=10_000, lease=lease)
    mine = {t.id for t in tokens}
    assert mine <= {c.token_id for c in taken.messages}
    # ...and the worker dies here: nothing is sent, nothing is marked.

    other = make_worker(database, clock, smtp)
    await cycle(other)
    assert not any(smtp.to(u.email) for u in users)  # still leased to the dead worker
    clock.advance(seconds=lease.total_seconds() - 1)
    await cycle(other)
    assert not any(smtp.to(u.email) for u in users)

    clock.advance(seconds=1)  # the lease ran out
    await cycle(other)
    clock.advance(minutes=10)
    await cycle(other)
    for user, token in zip(users, tokens, strict=True):
        assert len(smtp.to(user.email)) == 1
        [row] = await outbox_rows(database, token.id)
        assert (row.status, row.attempts, row.claimed_by) == ("sent", 2, other.worker_id)


async def test_an_smtp_outage_delays_mail_but_loses_none(client, plan, clock, database,
                                                         smtp) -> None:
    user = await plan.add_user(token=False)
    token = await issue(database, plan, user_id=user.user_id)
    await set_period(client, plan, 7, "days")
    worker = make_worker(database, clock, smtp)

    smtp.mode = "outage"  # 451 to every message
    await cycle(worker)
    [row] = await outbox_rows(database, token.id)
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.last_error.startswith("message refused for now: 451 4.3.0")
    assert row.next_attempt_at == clock.now() + timedelta(minutes=1)

    clock.advance(seconds=59)
    await cycle(worker)  # backing off: not even tried
    assert (await outbox_rows(database, token.id))[0].attempts == 1
    clock.advance(seconds=1)
    await cycle(worker)
    [row] = await outbox_rows(database, token.id)
    assert (row.attempts, row.next_attempt_at) == (2, clock.now() + timedelta(minutes=2))

    smtp.mode = "accept"
    await cycle(worker)
    assert smtp.to(user.email) == []  # still waiting for its next attempt
    clock.advance(minutes=2)
    await cycle(worker)
    clock.advance(hours=1)
    await cycle(worker)
    assert len(smtp.to(user.email)) == 1
    [row] = await outbox_rows(database, token.id)
    assert (row.status, row.attempts, row.last_error) == ("sent", 3, None)


async def test_an_unreachable_smtp_server_delays_mail_but_loses_none(
        client, plan, clock, database, smtp) -> None:
    user = await plan.add_user(token=False)
    token = await issue(database, plan, user_id=user.user_id)
    await set_period(client, plan, 7, "days")
    nobody_listens = make_worker(database, clock, None, smtp_host="127.0.0.1",
                                 smtp_port=free_port())
    await cycle(nobody_listens)
    [row] = await outbox_rows(database, token.id)
    assert row.status == "pending" and row.last_error.startswith("SMTPConnectError")

    clock.advance(minutes=1)
    await cycle(make_worker(database, clock, smtp))  # the server is back
    assert len(smtp.to(user.email)) == 1
    assert (await outbox_rows(database, token.id))[0].status == "sent"


async def test_a_permanent_rejection_is_recorded_and_not_retried(client, plan, clock, database,
                                                                 smtp) -> None:
    user = await plan.add_user(token=False)
    token = await issue(database, plan, user_id=user.user_id)
    await set_period(client, plan, 7, "days")
    worker = make_worker(database, clock, smtp)
    smtp.mode = "reject"  # 550 to the recipient
    await cycle(worker)
    [row] = await outbox_rows(database, token.id)
    assert row.status == "failed"
    assert row.last_error == (f"recipient refused: 550 5.1.1 <{user.email}>: Recipient address "
                              "rejected: mailbox unavailable")
    refused = smtp.recorder.refused

    smtp.mode = "accept"
    for _ in range(3):
        clock.advance(hours=7)  # past any backoff
        await cycle(worker)
    assert smtp.to(user.email) == []
    assert smtp.recorder.refused == refused  # never tried again
    [row] = await outbox_rows(database, token.id)
    assert (row.kind, row.status, row.attempts) == ("expiring", "failed", 1)

    clock.set(token.issued_at + timedelta(days=7))  # the "expired" notice is a new message
    await cycle(worker)
    [expired] = smtp.to(user.email)
    assert "has expired" in expired.subject
