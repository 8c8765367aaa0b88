"""Plan expiration policy: read, set, remove, preview. Changing it rewrites no token row
(rule 2): expiry is computed at check time from the period in force."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
from app.auth.principal import Principal
from app.errors import NotFound
from app.plans.expiry import (
    NOTICE_WINDOW,
    Period,
    PreviewCounts,
    latest_issue_expired_by,
    plan_period,
)
from app.plans.models import Plan
from app.tokens import cache
from app.tokens.models import Token


async def get_plan(session: AsyncSession, plan_id: uuid.UUID, *, lock: bool = False) -> Plan:
    query = select(Plan).where(Plan.id == plan_id)
    if lock:
        query = query.with_for_update()
    plan = (await session.execute(query)).scalar_one_or_none()
    if plan is None:
        raise NotFound("no such plan")
    return plan


def period_of(plan: Plan) -> Period | None:
    return plan_period(plan.expiration_value, plan.expiration_unit)


async def set_period(session: AsyncSession, plan_id: uuid.UUID, period: Period,
                     actor: Principal, now: datetime) -> Plan:
    plan = await get_plan(session, plan_id, lock=True)
    before = period_of(plan)
    plan.expiration_value, plan.expiration_unit = period.value, period.unit.value
    plan.policy_updated_at = now
    await audit.record(session, actor.actor, "plan.period_set", plan_id, "plan", plan_id, now,
                       previous=before.describe() if before else None, period=period.describe())
    await cache.changed(session, plan_id=plan_id)
    return plan


async def remove_period(session: AsyncSession, plan_id: uuid.UUID, actor: Principal,
                        now: datetime) -> Plan:
    plan = await get_plan(session, plan_id, lock=True)
    before = period_of(plan)
    plan.expiration_value = plan.expiration_unit = None
    plan.policy_updated_at = now
    await audit.record(session, actor.actor, "plan.period_removed", plan_id, "plan", plan_id, now,
                       previous=before.describe() if before else None)
    await cache.changed(session, plan_id=plan_id)
    return plan


def live_tokens(plan_id: uuid.UUID, now: datetime):  # noqa: ANN201 - a SQL condition
    """Tokens that only the plan's period could still expire: not revoked, not rotated, not past
    their own intrinsic expiry."""
    return and_(
        Token.plan_id == plan_id,
        Token.revoked_at.is_(None),
        Token.used_at.is_(None),
        or_(Token.expires_at.is_(None), Token.expires_at > now),
    )


async def preview(session: AsyncSession, plan_id: uuid.UUID, period: Period,
                  now: datetime) -> PreviewCounts:
    """How many live tokens a proposed period would expire at once, within 7 days, or later.

    Two thresholds on `issued_at` (the inverse of the period arithmetic) make it one aggregate
    query over the `(plan_id, issued_at)` index, whatever the number of tokens.
    """
    await get_plan(session, plan_id)
    soon = now + NOTICE_WINDOW
    t_now = latest_issue_expired_by(period, now)
    t_soon = latest_issue_expired_by(period, soon)
    immediately = Token.issued_at <= t_now
    within = or_(Token.issued_at <= t_soon, Token.expires_at <= soon)
    bucket = case((immediately, 0), (within, 1), else_=2)
    rows = (await session.execute(
        select(bucket, func.count()).where(live_tokens(plan_id, now)).group_by(bucket)
    )).all()
    counts = dict(rows)
    return PreviewCounts(
        expire_immediately=counts.get(0, 0),
        expire_within_7_days=counts.get(1, 0),
        expire_later=counts.get(2, 0),
        never_expire=0,  # under any period every token has an expiry
    )
