"""The expiry sweeps: find the tokens a notice is due for, and mark expired tokens, by index
ranges rather than by reading every token.

Rule 1 is computed when a token is checked, so a period change rewrites no row (rule 2). The
sweeps invert it instead: for a plan's period, `latest_issue_expired_by(period, t)` is the latest
generation time of a token expired by `t`, so "expired by now" and "expiring within the lead
time" are ranges over `issued_at` in the `(plan_id, issued_at)` order. Tokens with an intrinsic
lifetime are ranges over `expires_at`. The arithmetic itself stays in `app.plans.expiry`.

Plans are grouped by period (equal durations together), so a cycle runs a handful of queries
per distinct period, not per plan. The partial indexes of `app.notifications.models` hold only
live personal and integration tokens (not revoked, not yet marked expired), so a cycle costs
what changed since the last one.

- `mark_expired`: sets `expired_at` (when it died) on expired tokens in batches, and writes
  their "expired" notice in the same transaction: those the period in force expired, and those
  an earlier period did (at or before the plan's `expired_through`: rule 4, expiry is final),
  which a later period change did not bring back. Checks never read `expired_at`.
- `enqueue_expiring`: writes the "expiring" notice of tokens whose effective expiry falls within
  `notice_lead_days`, unless one exists for the same token and period (an anti-join).
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TextIO

from sqlalchemy import Row, bindparam, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import session_scope
from app.integrations.models import Integration
from app.notifications import outbox
from app.notifications.messages import NoticeFacts, NoticeKind, compose, period_key
from app.notifications.models import LIVE, LIVE_INTRINSIC, OutboxMessage
from app.plans.expiry import (
    Death,
    Period,
    Spell,
    Unit,
    death,
    effective_expiry,
    latest_issue_expired_by,
    plan_period,
)
from app.plans.models import PastPeriod, Plan
from app.tokens.models import Token
from app.users.models import User

log = logging.getLogger("tessera.worker")

# Plans per query (an IN list).
PLAN_CHUNK = 1000
# A token found expired long after it stopped working (a first run over an old database, a
# worker stopped for weeks) is marked without an "expired" notice: its owner learnt long ago.
EXPIRED_NOTICE_HORIZON = timedelta(days=30)


@dataclass
class PlanGroup:
    """Plans whose periods are equal durations: one threshold, one query."""

    key: str
    period: Period | None
    plan_ids: list[uuid.UUID] = field(default_factory=list)

    def chunks(self) -> Iterator[list[uuid.UUID]]:
        for start in range(0, len(self.plan_ids), PLAN_CHUNK):
            yield self.plan_ids[start:start + PLAN_CHUNK]


async def plan_groups(maker: async_sessionmaker[AsyncSession],
                      only: uuid.UUID | None = None) -> list[PlanGroup]:
    query = select(Plan.id, Plan.expiration_value, Plan.expiration_unit)
    if only is not None:
        query = query.where(Plan.id == only)
    async with maker() as session:
        rows = (await session.execute(query)).all()
    groups: dict[str, PlanGroup] = {}
    for plan_id, value, unit in rows:
        period = plan_period(value, unit)
        key = period_key(period)
        groups.setdefault(key, PlanGroup(key, period)).plan_ids.append(plan_id)
    return list(groups.values())


@dataclass(frozen=True, slots=True)
class Sweep:
    """What every sweep needs: when, how much at once, and where new tokens are had."""

    now: datetime
    batch_size: int
    base_url: str
    lead: timedelta = timedelta(days=7)
    # One plan's tokens only (an admin's "tell the affected users now"); every plan's if None.
    plan_id: uuid.UUID | None = None


_COLUMNS = (Token.id, Token.kind, Token.plan_id, Token.user_id, Token.created_by,
            Token.integration_id, Token.name, Token.hint, Token.issued_at, Token.expires_at,
            Plan.policy_updated_at)
# Not expired under an earlier period (rule 4): what the "expiring" sweep may still notice.
_NOT_CUT_OFF = or_(Plan.expired_through.is_(None), Token.issued_at > Plan.expired_through)


_BY_ISSUE = (Token.plan_id, Token.issued_at)
_BY_EXPIRY = (Token.expires_at,)


def _candidates(*conditions: Any, order: tuple[Any, ...], limit: int):  # noqa: ANN202
    """Tokens to look at, locked so that concurrent workers take different ones (PostgreSQL;
    FOR NO KEY UPDATE does not block the outbox's foreign key checks).

    Ordered as the partial index is: with a LIMIT and no order, PostgreSQL's estimate (it takes
    "not marked" and "issued long ago" as independent, when one excludes the other) makes a
    sequential scan look cheaper, and every batch then reads the table from its start."""
    return (select(*_COLUMNS).join(Plan, Plan.id == Token.plan_id).where(*conditions)
            .order_by(*order).limit(limit)
            .with_for_update(of=Token, skip_locked=True, key_share=True))


def _recipient_id(row: Row) -> uuid.UUID | None:
    """The owner of a personal token; the admin who generated an integration token."""
    return row.user_id if row.kind == "personal" else row.created_by


async def _notices(session: AsyncSession, sweep: Sweep, kind: NoticeKind, group: PlanGroup,
                   due: list[tuple[Row, datetime]],
                   deaths: dict[uuid.UUID, Death] | None = None) -> list[dict[str, Any]]:
    """Outbox rows for `due` (token, effective expiry) pairs, their text composed now; for
    expired tokens, `deaths` says under which period (set when) each died."""
    if not due:
        return []
    user_ids = {uid for row, _ in due if (uid := _recipient_id(row)) is not None}
    users = {r[0]: (r[1], r[2], r[3]) for r in (await session.execute(
        select(User.id, User.email, User.name, User.locale).where(User.id.in_(user_ids)))).all()} \
        if user_ids else {}
    integration_ids = {row.integration_id for row, _ in due if row.integration_id}
    integrations = dict((await session.execute(
        select(Integration.id, Integration.name).where(Integration.id.in_(integration_ids))
    )).all()) if integration_ids else {}
    rows = []
    for row, expiry in due:
        email, name, language = users.get(_recipient_id(row), (None, None, None))
        died = (deaths or {}).get(row.id)
        spell = died.spell if died else None
        period = spell.period if spell else group.period
        facts = NoticeFacts(
            kind=kind, token_id=row.id, token_kind=row.kind, token_name=row.name,
            token_hint=row.hint, plan_id=row.plan_id, issued_at=row.issued_at,
            expires_at=expiry, period=period, recipient_name=name,
            integration_id=row.integration_id,
            integration_name=integrations.get(row.integration_id),
            period_set_at=spell.since if spell else None,
            cut_short=bool(died and died.cut_short),
        )
        message = compose(facts, to=email or "", base_url=sweep.base_url, language=language)
        rows.append({
            "id": uuid.uuid4(), "token_id": row.id, "kind": kind.value, "expires_at": expiry,
            "period": period_key(period), "plan_id": row.plan_id, "recipient": email,
            "subject": message.subject, "body": message.body,
            # Written even with nobody to tell, so the sweeps stop looking at the token.
            "status": "pending" if email else "skipped",
            "last_error": None if email else "the token has no owner with an email address",
            "attempts": 0, "next_attempt_at": sweep.now, "claimed_until": None,
            "claimed_by": None, "created_at": sweep.now, "sent_at": None,
        })
    return rows


class Progress:
    """Long work says how far it got (a first run over an old database can take minutes): in a
    terminal, one line kept up to date (twice a second); elsewhere a log line with the counts
    so far, at most every `every` seconds."""

    def __init__(self, every: float = 10.0, *, stream: TextIO | None = None) -> None:
        self.every, self.last = every, time.monotonic()
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.live = bool(isatty and isatty())
        self.shown, self.last_shown = False, 0.0

    def tick(self, job: str, stats: Counter[str]) -> None:
        now = time.monotonic()
        if self.live:
            if now - self.last_shown >= 0.5:
                self.last_shown, self.shown = now, True
                counts = ", ".join(f"{k} {v:,}" for k, v in sorted(stats.items()))
                self.stream.write(f"\r{job}: {counts} so far\x1b[K")
                self.stream.flush()
        elif now - self.last >= self.every:
            self.last = now
            log.info("%s: %s so far", job, dict(stats),
                     extra={"job": job, "counts": dict(stats), "progress": True})

    def close(self) -> None:
        """Ends the terminal's line, if one was drawn."""
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False


# --- mark expired, with the "expired" notice --------------------------------------------------

_SET_EXPIRED = (
    update(Token.__table__)
    .where(Token.__table__.c.id == bindparam("b_id"), Token.__table__.c.expired_at.is_(None))
    .values(expired_at=bindparam("b_expired_at"))
)


def _worth_telling(died: Death, now: datetime) -> bool:
    """Did it stop working recently?"""
    return died.at > now - EXPIRED_NOTICE_HORIZON


async def _histories(session: AsyncSession, group: PlanGroup,
                     rows: list[Row]) -> dict[uuid.UUID, list[Spell]]:
    """Every period each plan of `rows` has had, the one in force (the group's) last."""
    plan_ids = {row.plan_id for row in rows}
    spells: dict[uuid.UUID, list[Spell]] = {plan_id: [] for plan_id in plan_ids}
    for past in (await session.execute(
            select(PastPeriod).where(PastPeriod.plan_id.in_(plan_ids))
            .order_by(PastPeriod.until))).scalars():
        spells[past.plan_id].append(Spell(Period(past.value, Unit(past.unit)), past.since,
                                          past.until))
    if group.period is not None:
        since = {row.plan_id: row.policy_updated_at for row in rows}
        for plan_id in plan_ids:
            spells[plan_id].append(Spell(group.period, since[plan_id]))
    return spells


async def _mark_batch(maker: async_sessionmaker[AsyncSession], sweep: Sweep, group: PlanGroup,
                      conditions: list[Any], order: tuple[Any, ...],
                      stats: Counter[str]) -> int:
    async with session_scope(maker) as session:
        rows = (await session.execute(
            _candidates(*conditions, order=order, limit=sweep.batch_size))).all()
        histories = await _histories(session, group, rows) if rows else {}
        expired: list[tuple[Row, datetime]] = []
        deaths: dict[uuid.UUID, Death] = {}
        for row in rows:
            died = death(row.issued_at, row.expires_at, histories[row.plan_id], sweep.now)
            if died is not None:
                expired.append((row, died.at))
                deaths[row.id] = died
        if expired:
            await session.execute(_SET_EXPIRED, [{"b_id": row.id, "b_expired_at": expiry}
                                                 for row, expiry in expired])
            tell = [(row, e) for row, e in expired if _worth_telling(deaths[row.id], sweep.now)]
            await outbox.enqueue(
                session, await _notices(session, sweep, NoticeKind.expired, group, tell, deaths))
            if tell:
                stats["notices_expired"] += len(tell)
            stats["marked_expired"] += len(expired)
    # Done when the batch was not full, or nothing in it could be marked (a race with a period
    # change: the next cycle sees the new period).
    return len(rows) if expired else 0


async def mark_expired(maker: async_sessionmaker[AsyncSession], sweep: Sweep) -> Counter[str]:
    stats: Counter[str] = Counter()
    progress = Progress()
    for group in await plan_groups(maker, sweep.plan_id):
        for chunk in group.chunks():
            ranges = [([LIVE_INTRINSIC, Token.plan_id.in_(chunk),
                        Token.expires_at <= sweep.now], _BY_EXPIRY),
                      # Expired under an earlier period, whatever the period is now (rule 4).
                      ([LIVE, Token.plan_id.in_(chunk),
                        Token.issued_at <= Plan.expired_through], _BY_ISSUE)]
            if group.period is not None:
                threshold = latest_issue_expired_by(group.period, sweep.now)
                ranges.append(([LIVE, Token.plan_id.in_(chunk), Token.issued_at <= threshold],
                               _BY_ISSUE))
            for conditions, order in ranges:
                while await _mark_batch(maker, sweep, group, conditions, order, stats) \
                        >= sweep.batch_size:
                    progress.tick("expiry.mark", stats)
    progress.close()
    return stats


# --- the "expiring" notice ------------------------------------------------------------------

def _not_noticed(group: PlanGroup):  # noqa: ANN202 - a SQL condition
    """No "expiring" notice yet for this token under this period. For one token and one period
    the effective expiry is one value, so this matches the outbox's unique key without redoing
    rule 1's calendar arithmetic in SQL."""
    return ~exists().where(OutboxMessage.token_id == Token.id,
                           OutboxMessage.kind == NoticeKind.expiring.value,
                           OutboxMessage.period == group.key)


async def _expiring_batch(maker: async_sessionmaker[AsyncSession], sweep: Sweep,
                          group: PlanGroup, conditions: list[Any], order: tuple[Any, ...],
                          stats: Counter[str]) -> int:
    soon = sweep.now + sweep.lead
    async with session_scope(maker) as session:
        rows = (await session.execute(_candidates(
            *conditions, _not_noticed(group), _NOT_CUT_OFF, order=order,
            limit=sweep.batch_size))).all()
        due = []
        for row in rows:
            expiry = effective_expiry(row.issued_at, row.expires_at, group.period)
            if expiry is not None and sweep.now < expiry <= soon:
                due.append((row, expiry))
        if due:
            await outbox.enqueue(
                session, await _notices(session, sweep, NoticeKind.expiring, group, due))
            stats["notices_expiring"] += len(due)
    return len(rows) if due else 0


async def enqueue_expiring(maker: async_sessionmaker[AsyncSession],
                           sweep: Sweep) -> Counter[str]:
    stats: Counter[str] = Counter()
    progress = Progress()
    soon = sweep.now + sweep.lead
    for group in await plan_groups(maker, sweep.plan_id):
        for chunk in group.chunks():
            ranges = [([LIVE_INTRINSIC, Token.plan_id.in_(chunk), Token.expires_at > sweep.now,
                        Token.expires_at <= soon], _BY_EXPIRY)]
            if group.period is not None:
                ranges.append(([
                    LIVE, Token.plan_id.in_(chunk),
                    Token.issued_at > latest_issue_expired_by(group.period, sweep.now),
                    Token.issued_at <= latest_issue_expired_by(group.period, soon),
                ], _BY_ISSUE))
            for conditions, order in ranges:
                while await _expiring_batch(maker, sweep, group, conditions, order, stats) \
                        >= sweep.batch_size:
                    progress.tick("notices.expiring", stats)
    progress.close()
    return stats
