"""Scheduled deactivations (rule 6, docs/design.md), run by the worker.

When the platform judges a custom integration to be operated by a third party, it sets a date;
from then on its installations are deactivated, except where a plan admin confirmed keeping it,
and not while the integration would still be allowed (approved by its review, or holding a
running limited-data exception: an exception holds through a scheduled deactivation, which
runs when it ends). Each installation is deactivated once per judgement: one a plan admin
reactivated afterwards (rule 7) is left alone.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit import service as audit
from app.audit.models import AuditEvent
from app.db import session_scope
from app.integrations.models import Installation, Integration
from app.integrations.review import spared_from_scheduled_deactivation
from app.integrations.service import facts_of
from app.notifications import reminders
from app.tokens import cache

ACTOR = "system"
ACTION = "installation.deactivated"


def reason(integ: Integration) -> str:
    scheduled = integ.deactivation_scheduled_at
    return ("the platform judged this integration to be operated by a third party; it was "
            f"deactivated on the date set ({scheduled.isoformat() if scheduled else '?'}) "
            "because no plan admin confirmed keeping it")


async def _already_done(session: AsyncSession, inst: Installation, integ: Integration) -> bool:
    """Deactivated by this job since the judgement (and reactivated by an admin since)."""
    return (await session.execute(
        select(AuditEvent.id).where(
            AuditEvent.plan_id == inst.plan_id, AuditEvent.action == ACTION,
            AuditEvent.actor == ACTOR, AuditEvent.target_id == str(integ.id),
            AuditEvent.occurred_at >= integ.judged_third_party_at,
        ).limit(1))).first() is not None


async def deactivate_due(maker: async_sessionmaker[AsyncSession], now: datetime, *,
                         batch_size: int, base_url: str = "") -> Counter[str]:
    stats: Counter[str] = Counter()
    after = None  # keyset: installations left alone are not looked at twice in a cycle
    while True:
        async with session_scope(maker) as session:
            query = (
                select(Installation, Integration)
                .join(Integration, Integration.id == Installation.integration_id)
                .where(Integration.deactivation_scheduled_at <= now,
                       Integration.judged_third_party_at.is_not(None),
                       Installation.state == "active",
                       Installation.keep_confirmed_at.is_(None))
                .order_by(Installation.id).limit(batch_size)
                .with_for_update(of=Installation, skip_locked=True)
            )
            if after is not None:
                query = query.where(Installation.id > after)
            rows = (await session.execute(query)).all()
            for inst, integ in rows:
                after = inst.id
                if spared_from_scheduled_deactivation(facts_of(integ), now):
                    stats["spared"] += 1
                    continue
                if await _already_done(session, inst, integ):
                    stats["left_reactivated"] += 1
                    continue
                why = reason(integ)
                inst.state, inst.deactivated_at = "deactivated", now
                inst.deactivated_by, inst.deactivation_reason = ACTOR, why
                await audit.record(session, ACTOR, ACTION, inst.plan_id, "integration", integ.id,
                                   now, reason=why, scheduled=True)
                await cache.changed(session, integration_id=integ.id)
                # The plan's admins are told, in the same transaction: once.
                await reminders.for_decision(session, "deactivated", integ, [inst.plan_id],
                                             now.isoformat(), now, base_url, why=why)
                stats["deactivated"] += 1
        if len(rows) < batch_size:
            return stats
