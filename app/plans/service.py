"""Plan expiration policy: read, set, remove, preview. Changing it rewrites no token row
(rule 2): expiry is computed at check time from the period in force."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Uuid, and_, bindparam, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.audit import service as audit
from app.auth.principal import Principal
from app.db import for_many, of_dialect, read_alone, rows, set_apart, write_lock
from app.errors import NotFound
from app.plans.expiry import (
    NOTICE_WINDOW,
    Period,
    PreviewCounts,
    Spell,
    Unit,
    add_period,
    closing,
    cut_off,
    latest_issue_expired_by,
    plan_period,
)
from app.plans.models import PastPeriod, Plan
from app.tokens import cache
from app.tokens.batches import Lookup
from app.tokens.models import Token
from app.users.models import User


async def get_plan(session: AsyncSession, plan_id: uuid.UUID, *, lock: bool = False) -> Plan:
    """The plan; with `lock`, for a change: concurrent changes of its period then run one after
    the other, each from the state the previous one left (rule 4's cut-off must never be lost)."""
    query = select(Plan).where(Plan.id == plan_id)
    if lock:
        await write_lock(session, Plan, Plan.id == plan_id)
        # The row as locked, even if this session read it before (the identity map would
        # otherwise keep the earlier values).
        query = query.with_for_update().execution_options(populate_existing=True)
    plan = (await session.execute(query)).scalar_one_or_none()
    if plan is None:
        raise NotFound("no such plan")
    return plan


# The plan's policy as columns, by the names of `Plan`'s attributes (built once): what an
# unchanged `PUT` answers, what the console's security page shows, what the history ends with.
_POLICIES_OF = select(Plan.id, Plan.expiration_value, Plan.expiration_unit,
                      Plan.policy_updated_at, Plan.expired_through, Plan.dpop_required)
_POLICY = _POLICIES_OF.where(Plan.id == bindparam("plan_id", type_=Uuid))
_POLICIES = for_many(_POLICIES_OF, Plan.id, Uuid)
PolicyRow = Any  # a row of _POLICY


async def read_policies(conn: AsyncConnection, ids: list[uuid.UUID],
                        ) -> dict[uuid.UUID, PolicyRow]:
    found = (await conn.execute(of_dialect(_POLICIES, conn.dialect.name), {"keys": ids})).all()
    return {row.id: row for row in found}


class PolicyReader(Lookup):
    """The policies that concurrent changes of plans' periods read first (`set_period`), in
    one SELECT. Only requests queued before it is sent share it, so each reads what was
    committed before it came: a configuration tool that sends its period to many plans, or
    to one plan again and again, costs one read per batch, not per request."""

    read = staticmethod(read_policies)


async def policy(session: AsyncSession, plan_id: uuid.UUID,
                 kept: cache.TokenCache | None = None) -> PolicyRow:
    """The plan's policy as columns (no ORM object; on a page that only reads, straight on the
    driver: `app.db.rows`). With `kept` (the token cache), as cached beside the plan's tokens
    while no change of the plan has come since: for pages that show it, never for a write
    that decides by it."""
    async def read() -> PolicyRow:
        found = await rows(session, _POLICY, {"plan_id": plan_id})
        if not found:
            raise NotFound("no such plan")
        return found[0]

    return await cache.read_plan(kept, "policy", plan_id, read)


def period_of(plan: Plan | PolicyRow) -> Period | None:
    return plan_period(plan.expiration_value, plan.expiration_unit)


def _close_period(session: AsyncSession, plan: Plan, actor: Principal,
                  now: datetime) -> Period | None:
    """Rule 4: the outgoing period's dead stay dead. Its cut-off (every generation time it has
    expired by now) joins the plan's `expired_through`, and the spell is kept to explain the
    deaths: one row, whatever the number of tokens."""
    before = period_of(plan)
    plan.expired_through, ended = closing(before, plan.policy_updated_at, plan.expired_through,
                                          now)
    if ended is not None:
        session.add(PastPeriod(id=uuid.uuid4(), plan_id=plan.id, value=ended.period.value,
                               unit=ended.period.unit.value, since=ended.since,
                               until=ended.until, cut_off=cut_off(ended.period, now),
                               replaced_by=actor.actor))
    plan.policy_updated_at = now
    return before


async def set_period(session: AsyncSession, plan_id: uuid.UUID, period: Period,
                     actor: Principal, now: datetime, policies: PolicyReader | None = None,
                     ) -> Plan | PolicyRow:
    """Set the plan's period. The period in force set again changes nothing (an idempotent
    PUT, as configuration tools send it every run): no spell closed and kept in the plan's
    history, no audit event, no notification to the replicas. Each kept spell is read by every
    page that explains a token's death, so re-sending the period must not grow the history."""
    # Most such PUTs change nothing: one read outside a transaction tells (with `policies`,
    # batched with the concurrent ones'), and the answer is what it read (a change committed
    # just after it comes after this PUT, as it would have after the lock). Otherwise the
    # locked read decides.
    if policies is not None and await set_apart(session):
        found = await policies.find(plan_id)
    else:
        found = next(iter(await read_alone(session, _POLICY, {"plan_id": plan_id})), None)
    if found is not None and period_of(found) == period:
        return found
    plan = await get_plan(session, plan_id, lock=True)
    if period_of(plan) == period:
        return plan
    before = _close_period(session, plan, actor, now)
    plan.expiration_value, plan.expiration_unit = period.value, period.unit.value
    await audit.record(session, actor.actor, "plan.period_set", plan_id, "plan", plan_id, now,
                       previous=before.describe() if before else None, period=period.describe(),
                       expired_through=_iso(plan.expired_through))
    await cache.changed(session, plan_id=plan_id)
    return plan


async def remove_period(session: AsyncSession, plan_id: uuid.UUID, actor: Principal,
                        now: datetime) -> Plan:
    plan = await get_plan(session, plan_id, lock=True)
    before = _close_period(session, plan, actor, now)
    plan.expiration_value = plan.expiration_unit = None
    await audit.record(session, actor.actor, "plan.period_removed", plan_id, "plan", plan_id, now,
                       previous=before.describe() if before else None,
                       expired_through=_iso(plan.expired_through))
    await cache.changed(session, plan_id=plan_id)
    return plan


async def set_dpop_required(session: AsyncSession, plan_id: uuid.UUID, required: bool,
                            actor: Principal, now: datetime) -> Plan:
    """Require (or stop requiring) DPoP for every custom integration of the plan: their
    access tokens from then on are bound (RFC 9449); tokens issued before keep what they are.
    Every replica forgets what it cached of those clients."""
    from app.integrations.models import Integration

    plan = await get_plan(session, plan_id, lock=True)
    if plan.dpop_required != required:
        plan.dpop_required = required
        await audit.record(session, actor.actor, "plan.dpop_required_set", plan_id, "plan",
                           plan_id, now, required=required)
        customs = (await session.execute(select(Integration.id).where(
            Integration.plan_id == plan_id, Integration.kind == "custom"))).scalars().all()
        for integration_id in customs:
            await cache.changed(session, integration_id=integration_id)
        await cache.changed(session, plan_id=plan_id)  # the policy pages show
    return plan


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


_HISTORY = select(PastPeriod.value, PastPeriod.unit, PastPeriod.since, PastPeriod.until) \
    .where(PastPeriod.plan_id == bindparam("plan_id", type_=Uuid)).order_by(PastPeriod.until)


async def history(session: AsyncSession, plan_id: uuid.UUID,
                  plan: Plan | PolicyRow | None = None,
                  kept: cache.TokenCache | None = None) -> list[Spell]:
    """Every period the plan has had, oldest first, the one in force last: to say when and why
    its tokens died (`expiry.death`). With `kept`, as `policy` keeps it (a page's read)."""
    async def read() -> tuple[Spell, ...]:
        spells = [Spell(Period(value, Unit(unit)), since, until) for value, unit, since, until
                  in await rows(session, _HISTORY, {"plan_id": plan_id})]
        current = plan or await policy(session, plan_id, kept)
        if (period := period_of(current)) is not None:
            spells.append(Spell(period, current.policy_updated_at))
        return tuple(spells)

    # A plan given is as this unit of work holds it, maybe changed: not kept for others.
    return list(await cache.read_plan(None if plan is not None else kept, "history", plan_id,
                                      read))


def live_tokens(plan: Plan, now: datetime):  # noqa: ANN201 - a SQL condition
    """Tokens still alive that a period could expire: not revoked, not rotated, not past their
    own intrinsic expiry, and not already expired for good (rule 4: under the period in force,
    or an earlier one)."""
    conditions = [
        Token.plan_id == plan.id,
        Token.revoked_at.is_(None),
        Token.used_at.is_(None),
        or_(Token.expires_at.is_(None), Token.expires_at > now),
    ]
    if plan.expired_through is not None:
        conditions.append(Token.issued_at > plan.expired_through)
    if (current := period_of(plan)) is not None:
        conditions.append(Token.issued_at > latest_issue_expired_by(current, now))
    return and_(*conditions)


# How many of the tokens a preview names one by one, soonest to die first.
DYING_LISTED = 100


@dataclass(frozen=True, slots=True)
class Dying:
    """A token a proposed period would expire for good within the notice window."""

    token_id: uuid.UUID
    kind: str
    name: str | None
    hint: str
    user_id: uuid.UUID | None
    user_email: str | None
    issued_at: datetime
    dies_at: datetime


async def preview(session: AsyncSession, plan_id: uuid.UUID, period: Period,
                  now: datetime) -> tuple[PreviewCounts, list[Dying]]:
    """How many live tokens a proposed period would expire at once, within 7 days, or later;
    and the first `DYING_LISTED` of those it would expire within 7 days, by the time they die.
    Every one of them dies for good (rule 4): a later change does not bring it back.

    Two thresholds on `issued_at` (the inverse of the period arithmetic) make it one aggregate
    query over the `(plan_id, issued_at)` index, whatever the number of tokens, and one range
    read for the list.
    """
    plan = await get_plan(session, plan_id)
    soon = now + NOTICE_WINDOW
    t_now = latest_issue_expired_by(period, now)
    t_soon = latest_issue_expired_by(period, soon)
    immediately = Token.issued_at <= t_now
    within = or_(Token.issued_at <= t_soon, Token.expires_at <= soon)
    bucket = case((immediately, 0), (within, 1), else_=2)
    live = live_tokens(plan, now)
    counts = dict((await session.execute(
        select(bucket, func.count()).where(live).group_by(bucket)
    )).all())
    listed = (await session.execute(
        select(Token.id, Token.kind, Token.name, Token.hint, Token.user_id, User.email,
               Token.issued_at, Token.expires_at)
        .outerjoin(User, User.id == Token.user_id)
        .where(live, Token.issued_at <= t_soon)
        .order_by(Token.issued_at, Token.id).limit(DYING_LISTED))).all()
    dying = []
    for tid, kind, name, hint, user_id, email, issued_at, expires_at in listed:
        # Dead at once if the proposed period has already run out; its own lifetime may end
        # it sooner still (rule 1).
        at = max(add_period(issued_at, period), now)
        if expires_at is not None:
            at = min(at, expires_at)
        dying.append(Dying(tid, kind, name, hint, user_id, email, issued_at, at))
    return PreviewCounts(
        expire_immediately=counts.get(0, 0),
        expire_within_7_days=counts.get(1, 0),
        expire_later=counts.get(2, 0),
        never_expire=0,  # under any period every token has an expiry
    ), dying
