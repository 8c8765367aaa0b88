"""Scheduled deactivations, run by the worker."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.audit.models import AuditEvent
from app.db import make_sessionmaker, session_scope
from app.integrations.models import Installation, Integration
from tests.notifications.support import add_integration, cycle, make_worker

pytestmark = pytest.mark.asyncio


async def _installation(db, integration_id, plan_id) -> Installation:  # noqa: ANN001
    async with make_sessionmaker(db.engine)() as session:
        return (await session.execute(select(Installation).where(
            Installation.integration_id == integration_id, Installation.plan_id == plan_id)
        )).scalar_one()


async def test_judged_integrations_are_deactivated_on_the_date_unless_kept(
        plan, other_plan, clock, database) -> None:
    judged_on, due = clock.now(), clock.now() + timedelta(days=14)
    integ = await add_integration(database, plan, name="Operated elsewhere",
                                  judged_third_party_at=judged_on,
                                  deactivation_scheduled_at=due, review_deadline=due)
    untouched = await add_integration(database, plan, name="Our own",
                                      deactivation_scheduled_at=due)  # not judged
    maker = make_sessionmaker(database.engine)
    async with session_scope(maker) as session:  # installed in a second plan, which keeps it
        session.add(Installation(id=uuid.uuid4(), integration_id=integ.id,
                                 plan_id=other_plan.plan_id, state="active",
                                 installed_at=clock.now(), keep_confirmed_at=clock.now(),
                                 keep_confirmed_by=other_plan.admin.user_id))
    worker = make_worker(database, clock, None)

    clock.set(due - timedelta(seconds=1))
    await cycle(worker)
    assert (await _installation(database, integ.id, plan.plan_id)).state == "active"

    clock.set(due)
    await cycle(worker)
    inst = await _installation(database, integ.id, plan.plan_id)
    assert (inst.state, inst.deactivated_at, inst.deactivated_by) == \
        ("deactivated", due, "system")
    assert "judged this integration to be operated by a third party" in inst.deactivation_reason
    assert (await _installation(database, integ.id, other_plan.plan_id)).state == "active"
    assert (await _installation(database, untouched.id, plan.plan_id)).state == "active"
    async with maker() as session:
        [event] = (await session.execute(select(AuditEvent).where(
            AuditEvent.target_id == str(integ.id),
            AuditEvent.action == "installation.deactivated"))).scalars()
    assert (event.actor, event.plan_id, event.occurred_at) == ("system", plan.plan_id, due)

    # A plan admin reactivates it while the deadline allows (rule 7): the job leaves it be.
    async with session_scope(maker) as session:
        await session.execute(update(Installation).where(Installation.id == inst.id).values(
            state="active", deactivated_at=None, deactivated_by=None, deactivation_reason=None))
    clock.advance(hours=1)
    await cycle(worker)
    assert (await _installation(database, integ.id, plan.plan_id)).state == "active"

    # Judged again later: a new judgement, a new deactivation.
    async with session_scope(maker) as session:
        await session.execute(update(Integration).where(Integration.id == integ.id).values(
            judged_third_party_at=clock.now(), deactivation_scheduled_at=clock.now()))
    await cycle(worker)
    assert (await _installation(database, integ.id, plan.plan_id)).state == "deactivated"
