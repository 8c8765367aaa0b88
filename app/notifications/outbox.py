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

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import Clock
from app.db import session_scope
from app.notifications.mailer import Mailer, PermanentFailure, TransientFailure
from app.notifications.messages import Email, NoticeKind
from app.notifications.models import UNPRUNED, OutboxMessage
from app.plans.expiry import (
    effective_expiry,
    is_expired,
    killed_by_earlier_periods,
    plan_period,
)
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
    token_id: uuid.UUID | None  # None: a reminder to a plan admin
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

    def by_recipient(self) -> list[list[Claimed]]:
        """The claimed notices, one group per recipient: each group is one mail."""
        groups: dict[str, list[Claimed]] = {}
        for c in self.messages:
            groups.setdefault(c.email.to, []).append(c)
        return list(groups.values())


# Notices one digest lists at the most; a recipient with more gets the rest in later cycles.
DIGEST_MAX = 1000


async def claim(maker: async_sessionmaker[AsyncSession], *, now: datetime, worker_id: str,
                limit: int, lease: timedelta, per_recipient: int = DIGEST_MAX,
                exclude: frozenset[str] = frozenset()) -> Claim:
    """Take the due notices of up to `limit` recipients (at most `per_recipient` each, none of
    those in `exclude`) for this worker until `now + lease`. (Two workers may rarely split one
    recipient's notices between two mails; each notice is still sent once.)

    Rows whose notice is no longer true (token revoked, expiry changed, expired before an
    "expiring" notice went out) are set `skipped` instead of being handed out."""
    async with session_scope(maker) as session:
        due = _claimable(now)
        if exclude:
            due = and_(due, OutboxMessage.recipient.not_in(sorted(exclude)))
        # The recipients of up to `limit` rows no other worker holds (SKIP LOCKED), the
        # longest waiting first; then the rest of those recipients' due rows join the claim.
        seen = (await session.execute(
            select(OutboxMessage.recipient).where(due)
            .order_by(OutboxMessage.next_attempt_at).limit(limit)
            .with_for_update(skip_locked=True))).scalars().all()
        recipients = list(dict.fromkeys(seen))
        if not recipients:
            return Claim([])
        ids = (await session.execute(
            select(OutboxMessage.id)
            .where(due, OutboxMessage.recipient.in_(recipients))
            .order_by(OutboxMessage.recipient, OutboxMessage.next_attempt_at, OutboxMessage.id)
            .limit(per_recipient * len(recipients))
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
    return Claim(sorted((c for c in claimed if c.id not in skipped),
                        key=lambda c: (c.email.to, c.expires_at, str(c.id))), len(skipped))


async def _stale(session: AsyncSession, claimed: list[Claimed],
                 now: datetime) -> dict[str, list[uuid.UUID]]:
    """Notices that no longer say something true, by reason. Rules 1 and 4 are evaluated
    afresh: an expired token stays expired whatever the period is now."""
    claimed = [c for c in claimed if c.token_id is not None]  # reminders are about no token
    if not claimed:
        return {}
    facts = {r[0]: r[1:] for r in (await session.execute(
        select(Token.id, Token.issued_at, Token.expires_at, Token.revoked_at,
               Plan.expiration_value, Plan.expiration_unit, Plan.expired_through)
        .join(Plan, Plan.id == Token.plan_id)
        .where(Token.id.in_({c.token_id for c in claimed}))
    )).all()}
    stale: dict[str, list[uuid.UUID]] = {}
    for c in claimed:
        issued_at, intrinsic, revoked_at, value, unit, expired_through = facts[c.token_id]
        expiry = effective_expiry(issued_at, intrinsic, plan_period(value, unit))
        dead = is_expired(expiry, now) or killed_by_earlier_periods(issued_at, expired_through)
        reason = None
        if revoked_at is not None:
            reason = "the token was revoked"
        elif c.kind == NoticeKind.expiring and dead:
            reason = "the token expired before this notice could be sent"
        elif c.kind == NoticeKind.expiring and expiry != c.expires_at:
            reason = "the token's expiry changed; a notice for the new expiry replaces this one"
        elif c.kind == NoticeKind.expired and not dead:  # pragma: no cover - rule 4
            reason = "the token is no longer expired"
        if reason:
            stale.setdefault(reason, []).append(c.id)
    return stale


async def _settle(maker: async_sessionmaker[AsyncSession], ids: list[uuid.UUID],
                  now: datetime, status: str) -> None:
    # Its own short transaction, right after the server accepted: the duplicate window.
    async with session_scope(maker) as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids), OutboxMessage.status == "pending")
            .values(status=status, sent_at=now, claimed_until=None, last_error=None)
            .execution_options(synchronize_session=False))


async def _mark_unsent(maker: async_sessionmaker[AsyncSession], group: list[Claimed],
                       worker_id: str, now: datetime, *, permanent: bool,
                       reason: str) -> None:
    attempts = max(c.attempts for c in group)
    values: dict[str, Any] = {"claimed_until": None, "last_error": reason}
    if permanent:
        values["status"] = "failed"
    else:
        values["next_attempt_at"] = now + backoff(attempts)
    async with session_scope(maker) as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_([c.id for c in group]),
                   OutboxMessage.status == "pending", OutboxMessage.claimed_by == worker_id)
            .values(**values).execution_options(synchronize_session=False))


async def send_claimed(maker: async_sessionmaker[AsyncSession], mailer: Mailer, clock: Clock,
                       claimed: Claim, *, worker_id: str,
                       settled: str = "sent") -> Counter[str]:
    """One mail per recipient: a notice as it was written, or a digest of several (each still
    settled once, with its own row)."""
    stats: Counter[str] = Counter()
    async with mailer.connection() as connection:
        for group in claimed.by_recipient():
            email = group[0].email if len(group) == 1 else digest(group)
            try:
                await connection.send(email)
            except PermanentFailure as exc:
                log.warning("%d notice(s) refused for good: %s", len(group), exc.reason)
                await _mark_unsent(maker, group, worker_id, clock.now(), permanent=True,
                                   reason=exc.reason)
                stats["failed"] += len(group)
            except TransientFailure as exc:
                log.info("%d notice(s) not sent, will retry: %s", len(group), exc.reason)
                await _mark_unsent(maker, group, worker_id, clock.now(), permanent=False,
                                   reason=exc.reason)
                stats["retry"] += len(group)
            else:
                await _settle(maker, [c.id for c in group], clock.now(), settled)
                stats[settled] += len(group)
                stats["mails"] += 1
    return stats


async def deliver(maker: async_sessionmaker[AsyncSession], mailer: Mailer, clock: Clock, *,
                  worker_id: str, smtp_timeout_seconds: float,
                  batch_size: int = DELIVERY_BATCH, settled: str = "sent") -> Counter[str]:
    """Send every due notice, one mail per recipient per call (a digest when several are due;
    a recipient with more than `DIGEST_MAX` gets the rest in the next cycle). Every claimed row
    is settled (sent, failed, retried later or skipped) before the next claim, so the loop
    ends."""
    stats: Counter[str] = Counter()
    limit = min(batch_size, DELIVERY_BATCH)
    mailed: set[str] = set()
    while True:
        taken = await claim(maker, now=clock.now(), worker_id=worker_id, limit=limit,
                            lease=lease_for(limit, smtp_timeout_seconds),
                            exclude=frozenset(mailed))
        if not taken:
            return stats
        if taken.skipped:
            stats["skipped"] += taken.skipped
        mailed.update(c.email.to for c in taken.messages)
        stats.update(await send_claimed(maker, mailer, clock, taken, worker_id=worker_id,
                                        settled=settled))


async def waiting(maker: async_sessionmaker[AsyncSession]) -> int:
    """Notices not sent yet."""
    async with maker() as session:
        return (await session.execute(
            select(func.count()).where(OutboxMessage.status == "pending"))).scalar_one()


# A digest of more notices than this lists them by subject only.
DIGEST_FULL = 20


def digest(group: list[Claimed]) -> Email:
    """Several notices for one recipient in one mail: a line for each, then each in full (up
    to `DIGEST_FULL` of them; past that, the lines only). Its Message-ID is stable for the same
    notices, so a resend of the same mail is recognisable."""
    lines = "\n".join(f"- {c.email.subject}" for c in group)
    parts = [f"You have {len(group)} notices about your Tessera tokens:\n\n{lines}"]
    if len(group) <= DIGEST_FULL:
        parts += [f"--- {i} of {len(group)} ---\n\n{c.email.body}"
                  for i, c in enumerate(group, 1)]
    else:
        parts.append("GET /v1/me/tokens lists your tokens with their expiry dates; a token is "
                     "never extended: generate a new one (POST /v1/me/tokens) where one is "
                     "used.")
    expired = sum(c.kind == NoticeKind.expired for c in group)
    subject = (f"{len(group)} of your Tessera tokens expire soon" if not expired else
               f"{len(group)} notices about your Tessera tokens ({expired} expired)")
    if any(c.token_id is None for c in group):  # a plan admin's reminders among them
        subject = f"{len(group)} notices from Tessera"
        parts[0] = f"You have {len(group)} notices from Tessera:\n\n{lines}"
    ident = uuid.uuid5(uuid.NAMESPACE_URL, ",".join(sorted(str(c.id) for c in group)))
    return Email(to=group[0].email.to, subject=subject, body="\n\n".join(parts) + "\n",
                 message_id=str(ident))


# What pruning may touch: notices that will never be sent (again).
SETTLED = ("sent", "logged", "failed", "skipped")
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
