"""Where an integration stands in a plan: its installation's state and approved scopes, and the
plan's token period, read in one round trip and kept in the token cache.

The token endpoint reads this to grant (rule 6 decides, the period bounds the new token, the
approved scopes bound its scope: rule 11); introspection and revocation read the state to judge
a third-party caller in the plan of the token it names. An installation change evicts the
entry (`cache.changed(integration_id=...)`), and any plan change evicts every entry.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from app.db import connection
from app.integrations.models import Installation
from app.plans.expiry import Period, plan_period
from app.plans.models import Plan
from app.tokens import cache
from app.tokens.cache import TokenCache


@dataclass(frozen=True, slots=True)
class Placement:
    plan_id: uuid.UUID
    state: str | None  # None: not installed in the plan
    approved_scopes: tuple[str, ...]
    period: Period | None


# Statements built once.
_IN_PLAN = (
    select(Plan.id, Installation.state, Installation.approved_scopes, Plan.expiration_value,
           Plan.expiration_unit)
    .select_from(Plan)
    .outerjoin(Installation, and_(Installation.plan_id == Plan.id,
                                  Installation.integration_id == bindparam("integration_id")))
    .where(Plan.id == bindparam("plan_id"))
)
_INSTALLED = (
    select(Plan.id, Installation.state, Installation.approved_scopes, Plan.expiration_value,
           Plan.expiration_unit)
    .join(Plan, Plan.id == Installation.plan_id)
    .where(Installation.integration_id == bindparam("integration_id"))
)


def _placement(row: tuple) -> Placement:
    plan_id, state, approved, value, unit = row
    return Placement(plan_id, state, tuple(approved or ()), plan_period(value, unit))


async def in_plan(db: AsyncSession | AsyncConnection | AsyncEngine, tcache: TokenCache | None,
                  integration_id: uuid.UUID, plan_id: uuid.UUID) -> Placement | None:
    """The integration in `plan_id` (None: no such plan). Given an engine, a connection is
    taken only when the cache cannot answer (one SELECT, no transaction)."""
    found = tcache.get_placement(integration_id, plan_id) if tcache is not None else None
    if found is not None:
        return found or None
    generation = tcache.generation if tcache is not None else 0
    params = {"integration_id": integration_id, "plan_id": plan_id}
    if isinstance(db, AsyncEngine):
        async with connection(cache.autocommit(db)) as conn:
            row = (await conn.execute(_IN_PLAN, params)).first()
    else:
        row = (await db.execute(_IN_PLAN, params)).first()
    placement = _placement(tuple(row)) if row is not None else None
    if tcache is not None:
        tcache.put_placement(integration_id, plan_id, placement or (), generation)
    return placement


async def installed(db: AsyncSession | AsyncConnection, tcache: TokenCache | None,
                    integration_id: uuid.UUID) -> tuple[Placement, ...]:
    """Every plan the integration is installed in."""
    found = tcache.get_placement(integration_id, None) if tcache is not None else None
    if found is not None:
        return found
    generation = tcache.generation if tcache is not None else 0
    placements = tuple(_placement(tuple(r)) for r in (await db.execute(
        _INSTALLED, {"integration_id": integration_id})).all())
    if tcache is not None:
        tcache.put_placement(integration_id, None, placements, generation)
    return placements
