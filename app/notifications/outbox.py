"""The transactional outbox: notices are written in the transaction that finds them, then mailed.

Rule 5 of docs/design.md, "exactly one notice per token per expiry", across replicas and restarts:

- **At most one row** per (token, kind, effective expiry): a UNIQUE key, and an INSERT that
  tolerates conflicts, so two workers finding the same token write one row.
- **One sender at a time**: a worker claims rows with `SELECT … FOR UPDATE SKIP LOCKED`
  (PostgreSQL; on SQLite, writers are serialised and the claiming UPDATE re-checks the row) and
  takes a lease (`claimed_until`). A worker killed after claiming loses nothing: the lease runs
  out and another worker claims the row.
- **Never lost**: a row leaves `pending` only when the SMTP server accepted it (`sent`), refused it
  for good (`failed`, with the reason), or it no longer says something true (`skipped`). Other
  errors retry with exponential backoff.

Exactly once across a crash *after* the server accepted a message and *before* the row is marked
`sent` is impossible in general (no transaction spans the SMTP server and the database). The
window is kept to one short UPDATE, committed on its own right after each send; should it happen,
the resend carries the same Message-ID, so mail systems can recognise it.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import Clock
from app.db import session_scope
from app.notifications.mailer import Mailer, PermanentFailure, TransientFailure
from app.notifications.messages import Email, NoticeKind
from app.notifications.models import UNPRUNED, OutboxMessage
from app.plans.expiry import effective_expiry, is_expired, plan_period
from app.plans.models import Plan
from app.tokens.models import Token

log = logging.getLogger("tessera.notifications")

BACKOFF_BASE = timedelta(minutes=1)
BACKOFF_CAP = timedelta(hours=6)
# Rows claimed at once by one worker. Their lease covers sending them all at the SMTP timeout's
# pace (about 20 minutes at the default 30 s): that long, at most, a killed worker delays them.
DELIVERY_BATCH = 20
_UNIQUE_KEY = ["token_id", "kind", "expires_at"]


def backoff(attempts: int) -> timedelta:
    """1, 2, 4, … minutes after the 1st, 2nd, 3rd … failed attempt, at most 6 hours."""
    return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(max(attempts - 1, 0), 20))


def lease_for(count: int, smtp_timeout_seconds: float) -> timedelta:
    """Long enough to connect and send `count` messages, each within the SMTP timeout."""
    return timedelta(seconds=60 + 2 * smtp_timeout_seconds * count)


async def enqueue(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert notices, each at most once (the UNIQUE key; a conflict inserts nothing).

    On a conflict only `period` is brought up to date, so that the sweeps' anti-join recognises
    a notice for the same expiry reached under an equivalent period and stops looking at it.
    Rows go in key order, so concurrent inserts of overlapping sets cannot deadlock.
    """
    if not rows:
        return
    rows = sorted(rows, key=lambda r: (str(r["token_id"]), r["kind"], r["expires_at"]))
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(OutboxMessage)
    elif dialect == "sqlite":
        stmt = sqlite.insert(OutboxMessage)
    else:  # pragma: no cover
        raise NotImplementedError(dialect)
    stmt = stmt.on_conflict_do_update(
        index_elements=_UNIQUE_KEY, set_={"period": stmt.excluded.period},
        where=OutboxMessage.period != stmt.excluded.period,
    )
    await session.execute(stmt, rows)


@dataclass(frozen=True, slots=True)
class Claimed:
    id: uuid.UUID
    token_id: uuid.UUID
    kind: str
    expires_at: datetime
    attempts: int  # including this one
    email: Email


def _claimable(now: datetime):  # noqa: ANN202 - a SQL condition
    return and_(
        OutboxMessage.status == "pending",
        OutboxMessage.next_attempt_at <= now,
        or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until <= now),
    )


@dataclass(frozen=True, slots=True)
class Claim:
    messages: list[Claimed]
    skipped: int = 0

    def __bool__(self) -> bool:
        return bool(self.messages or self.skipped)


async def claim(maker: async_sessionmaker[AsyncSession], *, now: datetime, worker_id: str,
                limit: int, lease: timedelta) -> Claim:
    """Take up to `limit` due rows for this worker until `now + lease`.

    Rows whose notice is no longer true (token revoked, expiry changed, expired before an
    "expiring" notice went out) are set `skipped` instead of being handed out."""
    async with session_scope(maker) as session:
        ids = (await session.execute(
            select(OutboxMessage.id).where(_claimable(now))
            .order_by(OutboxMessage.next_attempt_at).limit(limit)
            .with_for_update(skip_locked=True)
        )).scalars().all()
        if not ids:
            return Claim([])
        # The WHERE is checked again: on SQLite another worker may have claimed them meanwhile.
        rows = (await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids), _claimable(now))
            .values(claimed_until=now + lease, claimed_by=worker_id,
                    attempts=OutboxMessage.attempts + 1)
            .returning(OutboxMessage.id, OutboxMessage.token_id, OutboxMessage.kind,
                       OutboxMessage.expires_at, OutboxMessage.attempts,
                       OutboxMessage.recipient, OutboxMessage.subject, OutboxMessage.body)
            .execution_options(synchronize_session=False)
        )).all()
        claimed = [Claimed(r[0], r[1], r[2], r[3], r[4],
                           Email(to=r[5] or "", subject=r[6], body=r[7], message_id=str(r[0])))
                   for r in rows]
        stale = await _stale(session, claimed, now)
        for reason, message_ids in stale.items():
            await session.execute(
                update(OutboxMessage).where(OutboxMessage.id.in_(message_ids))
                .values(status="skipped", last_error=reason, claimed_until=None)
                .execution_options(synchronize_session=False))
    skipped = {i for ids_ in stale.values() for i in ids_}
    return Claim([c for c in claimed if c.id not in skipped], len(skipped))


async def _stale(session: AsyncSession, claimed: list[Claimed],
                 now: datetime) -> dict[str, list[uuid.UUID]]:
    """Notices that no longer say something true, by reason. Rule 1 is evaluated afresh."""
    if not claimed:
        return {}
    facts = {r[0]: r[1:] for r in (await session.execute(
        select(Token.id, Token.issued_at, Token.expires_at, Token.revoked_at,
               Plan.expiration_value, Plan.expiration_unit)
        .join(Plan, Plan.id == Token.plan_id)
        .where(Token.id.in_({c.token_id for c in claimed}))
    )).all()}
    stale: dict[str, list[uuid.UUID]] = {}
    for c in claimed:
        issued_at, intrinsic, revoked_at, value, unit = facts[c.token_id]
        expiry = effective_expiry(issued_at, intrinsic, plan_period(value, unit))
        reason = None
        if revoked_at is not None:
            reason = "the token was revoked"
        elif c.kind == NoticeKind.expiring and expiry != c.expires_at:
            reason = "the token's expiry changed; a notice for the new expiry replaces this one"
        elif c.kind == NoticeKind.expiring and is_expired(expiry, now):
            reason = "the token expired before this notice could be sent"
        elif c.kind == NoticeKind.expired and not is_expired(expiry, now):
            reason = "the token is no longer expired (the plan's period changed)"
        if reason:
            stale.setdefault(reason, []).append(c.id)
    return stale


async def _mark_sent(maker: async_sessionmaker[AsyncSession], message_id: uuid.UUID,
                     now: datetime) -> None:
    # Its own short transaction, right after the server accepted: the duplicate window.
    async with session_scope(maker) as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id, OutboxMessage.status == "pending")
            .values(status="sent", sent_at=now, claimed_until=None, last_error=None)
            .execution_options(synchronize_session=False))


async def _mark_unsent(maker: async_sessionmaker[AsyncSession], c: Claimed, worker_id: str,
                       now: datetime, *, permanent: bool, reason: str) -> None:
    values: dict[str, Any] = {"claimed_until": None, "last_error": reason}
    if permanent:
        values["status"] = "failed"
    else:
        values["next_attempt_at"] = now + backoff(c.attempts)
    async with session_scope(maker) as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == c.id, OutboxMessage.status == "pending",
                   OutboxMessage.claimed_by == worker_id)
            .values(**values).execution_options(synchronize_session=False))


async def send_claimed(maker: async_sessionmaker[AsyncSession], mailer: Mailer, clock: Clock,
                       claimed: list[Claimed], *, worker_id: str) -> Counter[str]:
    stats: Counter[str] = Counter()
    async with mailer.connection() as connection:
        for c in claimed:
            try:
                await connection.send(c.email)
            except PermanentFailure as exc:
                log.warning("notice %s refused for good: %s", c.id, exc.reason)
                await _mark_unsent(maker, c, worker_id, clock.now(), permanent=True,
                                   reason=exc.reason)
                stats["failed"] += 1
            except TransientFailure as exc:
                log.info("notice %s not sent (attempt %d), will retry: %s", c.id, c.attempts,
                         exc.reason)
                await _mark_unsent(maker, c, worker_id, clock.now(), permanent=False,
                                   reason=exc.reason)
                stats["retry"] += 1
            else:
                await _mark_sent(maker, c.id, clock.now())
                stats["sent"] += 1
    return stats


async def deliver(maker: async_sessionmaker[AsyncSession], mailer: Mailer, clock: Clock, *,
                  worker_id: str, smtp_timeout_seconds: float,
                  batch_size: int = DELIVERY_BATCH) -> Counter[str]:
    """Send every due notice. Every claimed row is settled (sent, failed, retried later or
    skipped) before the next claim, so the loop ends."""
    stats: Counter[str] = Counter()
    limit = min(batch_size, DELIVERY_BATCH)
    while True:
        taken = await claim(maker, now=clock.now(), worker_id=worker_id, limit=limit,
                            lease=lease_for(limit, smtp_timeout_seconds))
        if not taken:
            return stats
        if taken.skipped:
            stats["skipped"] += taken.skipped
        stats.update(await send_claimed(maker, mailer, clock, taken.messages,
                                        worker_id=worker_id))



# What pruning may touch: notices that will never be sent (again).
SETTLED = ("sent", "failed", "skipped")
# Batches per call: a cycle's pruning stays bounded however large the backlog; the next cycle
# goes on where this one stopped.
PRUNE_BATCHES = 20


async def prune(maker: async_sessionmaker[AsyncSession], *, now: datetime,
                retention: timedelta, batch_size: int = 1000) -> Counter[str]:
    """Settled notices written more than `retention` ago lose what they said, a batch per
    transaction, oldest first; pending ones are never touched.

    The row itself is the UNIQUE key that keeps a second notice for the same token and expiry
    from being written (rule 5): a period removed and set again later brings the same expiry
    back. So it stays, stripped of its recipient, text, last error and claimant (the personal
    data and nearly all the bytes). A row whose token is revoked when it is pruned is deleted:
    revoked tokens are never notified again. (One stripped before its token was revoked stays,
    a key of a few dozen bytes.)"""
    cutoff = now - retention
    stats: Counter[str] = Counter()
    for _ in range(PRUNE_BATCHES):
        async with session_scope(maker) as session:
            rows = (await session.execute(
                select(OutboxMessage.id, Token.revoked_at.is_not(None))
                .join(Token, Token.id == OutboxMessage.token_id)
                .where(UNPRUNED, OutboxMessage.status.in_(SETTLED),
                       OutboxMessage.created_at < cutoff)
                .order_by(OutboxMessage.created_at).limit(batch_size)
                .with_for_update(of=OutboxMessage, skip_locked=True))).all()
            doomed = [i for i, revoked in rows if revoked]
            stripped = [i for i, revoked in rows if not revoked]
            if doomed:
                await session.execute(
                    delete(OutboxMessage).where(OutboxMessage.id.in_(doomed))
                    .execution_options(synchronize_session=False))
            if stripped:
                await session.execute(
                    update(OutboxMessage).where(OutboxMessage.id.in_(stripped))
                    .values(recipient=None, subject="", body="", last_error=None,
                            claimed_by=None)
                    .execution_options(synchronize_session=False))
        stats["deleted"] += len(doomed)
        stats["stripped"] += len(stripped)
        if len(rows) < batch_size:
            break
    return +stats
