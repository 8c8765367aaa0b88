"""Reminders to a plan's admins about its integrations: each said once, to each admin, in the
admin's language, whatever the number of workers; through a real SMTP server, the clock moved
by the test."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.db import make_sessionmaker, session_scope
from app.notifications.models import OutboxMessage
from app.users.models import User
from app.worker.loop import run_cycle
from tests.notifications.support import add_integration, cycle, make_worker

pytestmark = pytest.mark.asyncio


async def _french_admin(plan, database) -> str:  # noqa: ANN001
    admin = await plan.add_user("admin", token=False)
    async with session_scope(make_sessionmaker(database.engine)) as session:
        await session.execute(update(User).where(User.id == admin.user_id).values(locale="fr"))
    return admin.email


async def _reminders(database, plan) -> list[OutboxMessage]:  # noqa: ANN001
    async with make_sessionmaker(database.engine)() as session:
        return list((await session.execute(select(OutboxMessage).where(
            OutboxMessage.plan_id == plan.plan_id, OutboxMessage.token_id.is_(None))
            .order_by(OutboxMessage.created_at, OutboxMessage.topic))).scalars())


def _subjects(smtp, email: str) -> list[str]:  # noqa: ANN001
    return [" ".join(r.subject.split()) for r in smtp.to(email)]  # as read, unfolded


async def test_attention_then_countdown_each_once_across_two_workers_in_each_language(
        plan, clock, database, smtp) -> None:  # noqa: ANN001
    french = await _french_admin(plan, database)
    member = await plan.add_user("member", token=False)
    deadline = clock.now() + timedelta(days=40)
    await add_integration(database, plan, name="Acme Sync", kind="third_party", plan_id=None,
                          review_deadline=deadline)
    a = make_worker(database, clock, smtp)
    b = make_worker(database, clock, smtp)

    async def both() -> None:
        reports = await asyncio.gather(run_cycle(a), run_cycle(b))
        assert all(r.ok for r in reports), [r.jobs for r in reports]

    await both()
    await both()
    assert _subjects(smtp, plan.admin.email) == [
        "Acme Sync needs your attention before " + _long_en(deadline)]
    [fr] = _subjects(smtp, french)
    assert fr.startswith("Acme Sync demande votre attention avant le ")
    assert smtp.to(member.email) == []  # admins only
    body = smtp.to(plan.admin.email)[0].body
    assert "https://tessera.test/console/admin/integrations" in body

    clock.set(deadline - timedelta(days=30))
    await both()
    clock.set(deadline - timedelta(days=29))
    await both()
    assert _subjects(smtp, plan.admin.email)[1:] == ["30 days left to act on Acme Sync"]
    assert _subjects(smtp, french)[1:] == ["Plus que 30 jours pour agir sur Acme Sync"]

    clock.set(deadline - timedelta(days=6))
    await both()
    await both()
    assert _subjects(smtp, plan.admin.email)[2:] == ["7 days left to act on Acme Sync"]
    clock.set(deadline + timedelta(days=1))  # past: nothing more to count down
    await both()
    assert len(smtp.to(plan.admin.email)) == 3
    assert all(r.status == "sent" for r in await _reminders(database, plan))


async def test_a_first_sweep_a_week_before_says_it_once_not_twice(plan, clock, database,
                                                                  smtp) -> None:  # noqa: ANN001
    deadline = clock.now() + timedelta(days=5)
    await add_integration(database, plan, name="Late Find", kind="third_party", plan_id=None,
                          review_deadline=deadline)
    worker = make_worker(database, clock, smtp)
    await cycle(worker)
    await cycle(worker)
    assert len(smtp.to(plan.admin.email)) == 1  # "needs attention", its deadline in it
    statuses = sorted((r.kind, r.status) for r in await _reminders(database, plan))
    assert statuses == [("attention", "sent"), ("deadline", "skipped")]


async def test_decisions_are_told_once_moved_deadline_exception_refused_and_granted(
        client, operator, plan, clock, database, smtp) -> None:  # noqa: ANN001
    from tests.oauth2.conftest import register_custom

    custom = await register_custom(client, plan)
    r = await client.put(f"/v1/integrations/{custom.id}/judgement", headers=operator,
                         json={"deactivate_at": (clock.now() + timedelta(days=60)).isoformat()})
    assert r.status_code == 200
    worker = make_worker(database, clock, smtp)
    await cycle(worker)
    assert len(smtp.to(plan.admin.email)) == 1  # needs attention

    moved = clock.now() + timedelta(days=90)
    for _ in range(3):  # the same move, three times: one mail
        r = await client.put(f"/v1/integrations/{custom.id}/review", headers=operator,
                             json={"deadline": moved.isoformat()})
        assert r.status_code == 200
    await cycle(worker)
    await cycle(worker)
    subjects = _subjects(smtp, plan.admin.email)
    assert subjects[1:] == [f"The deadline for In-house app moved to {_long_en(moved)}"]

    base = f"/v1/plans/{plan.plan_id}/integrations/{custom.id}/exception-requests"
    r = await client.post(base, headers=plan.admin.auth, json={"message": "Payroll runs on it"})
    assert r.status_code == 201
    r = await client.post(base, headers=plan.admin.auth, json={"message": "again"})
    assert r.status_code == 409 and r.json()["error"] == "exception_already_requested"
    queue = [q for q in (await client.get("/v1/exception-requests", headers=operator)).json()
             if q["integration_id"] == str(custom.id)]  # the platform's queue: every plan's
    assert [(q["plan_id"], q["message"]) for q in queue] == [
        (str(plan.plan_id), "Payroll runs on it")]
    r = await client.post(f"/v1/integrations/{custom.id}/exception-refusals", headers=operator,
                          json={"plan_id": str(plan.plan_id), "note": "Finish the review."})
    assert r.status_code == 204
    r = await client.post(f"/v1/integrations/{custom.id}/exception-refusals", headers=operator,
                          json={"plan_id": str(plan.plan_id)})
    assert r.status_code == 404  # answered already
    assert not await _open(client, operator, custom.id)
    await cycle(worker)
    assert _subjects(smtp, plan.admin.email)[2:] == ["The exception for In-house app was refused"]
    assert "Finish the review." in smtp.to(plan.admin.email)[2].body

    r = await client.post(base, headers=plan.admin.auth, json={"message": "Please"})
    assert r.status_code == 201
    until = clock.now() + timedelta(days=20)
    r = await client.put(f"/v1/integrations/{custom.id}/exception", headers=operator,
                         json={"until": until.isoformat()})
    assert r.status_code == 200
    await cycle(worker)
    assert _subjects(smtp, plan.admin.email)[3:] == [
        f"An exception was granted for In-house app until {_long_en(until)}"]
    assert not await _open(client, operator, custom.id)
    r = await client.post(base, headers=plan.admin.auth, json={"message": "more"})
    assert r.status_code == 422 and r.json()["error"] == "exception_running"


async def test_exception_requests_are_refused_where_they_make_no_sense(
        client, operator, plan, other_plan, clock) -> None:  # noqa: ANN001
    from tests.oauth2.conftest import register_custom

    custom = await register_custom(client, plan)  # not judged: not subject to review
    base = f"/v1/plans/{plan.plan_id}/integrations/{custom.id}/exception-requests"
    r = await client.post(base, headers=plan.admin.auth, json={"message": "x"})
    assert r.status_code == 422 and r.json()["error"] == "exception_not_needed"
    member = await plan.add_user("member")
    r = await client.post(base, headers=member.auth, json={"message": "x"})
    assert r.status_code == 403
    r = await client.post(base, headers=other_plan.admin.auth, json={"message": "x"})
    assert r.status_code == 404
    r = await client.post(f"/v1/plans/{other_plan.plan_id}/integrations/{custom.id}"
                          "/exception-requests", headers=other_plan.admin.auth,
                          json={"message": "x"})
    assert r.status_code == 404  # not installed there
    for body in [{}, {"message": ""}, {"message": "x" * 2001}, {"message": 1}]:
        r = await client.post(base, headers=plan.admin.auth, json=body)
        assert r.status_code == 422
    assert (await client.get("/v1/exception-requests", headers=plan.admin.auth)).status_code \
        == 403
    r = await client.post(f"/v1/integrations/{uuid.uuid4()}/exception-refusals",
                          headers=operator, json={"plan_id": str(plan.plan_id)})
    assert r.status_code == 404


async def test_an_executed_deactivation_is_told_to_the_admins_once(plan, clock, database,
                                                                   smtp) -> None:  # noqa: ANN001
    due = clock.now() + timedelta(days=14)
    await add_integration(database, plan, name="Operated elsewhere",
                          judged_third_party_at=clock.now(), deactivation_scheduled_at=due,
                          review_deadline=due)
    worker = make_worker(database, clock, smtp)
    await cycle(worker)
    clock.set(due)
    await asyncio.gather(run_cycle(worker), run_cycle(make_worker(database, clock, smtp)))
    await cycle(worker)
    deactivated = [s for s in _subjects(smtp, plan.admin.email) if "was deactivated" in s]
    assert deactivated == ["Operated elsewhere was deactivated in Acme"]


async def _open(client, operator, integration_id) -> list:  # noqa: ANN001
    queue = (await client.get("/v1/exception-requests", headers=operator)).json()
    return [q for q in queue if q["integration_id"] == str(integration_id)]


def _long_en(at) -> str:  # noqa: ANN001
    return f"{at.day} {at:%B %Y, %H:%M} UTC"
