"""The review lifecycle: operators review, except and judge integrations; plan admins manage
their installations. Every change is an audit event and reaches every replica's cache."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Uuid, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
from app.audit.models import AuditEvent
from app.db import rows, write_lock
from app.errors import Conflict, InvalidRequest, NotFound
from app.integrations import review
from app.integrations.access import Access, decide
from app.integrations.models import Installation, Integration
from app.integrations.schemas import (
    AccessOut,
    ExceptionRequestOut,
    InstallationOut,
    JudgementIn,
    ReportOut,
    ReviewIn,
    ReviewOut,
)
from app.integrations.service import facts_of, get, out
from app.notifications import reminders
from app.notifications.messages import iso
from app.tokens import cache
from app.tokens.rules import first_after

REPORT_ACTION = "integration.misjudgement_reported"


def review_out(integ: Integration) -> ReviewOut:
    return ReviewOut(**out(integ).model_dump(), review_steps=integ.review_steps or {},
                     missing_steps=review.missing_steps(integ.data_access,
                                                        integ.review_steps or {}),
                     deactivation_scheduled_at=integ.deactivation_scheduled_at)


async def _changed(session: AsyncSession, integ: Integration, actor: str, action: str,
                   now: datetime, **detail: object) -> None:
    await audit.record(session, actor, action, integ.plan_id, "integration", integ.id, now,
                       **detail)
    await cache.changed(session, integration_id=integ.id)


async def set_review(session: AsyncSession, integration_id: uuid.UUID, body: ReviewIn, *,
                     actor: str, now: datetime, base_url: str = "") -> Integration:
    integ = await get(session, integration_id)
    steps = dict(integ.review_steps or {})
    for step, done in (body.steps or {}).items():
        if done:
            steps.setdefault(step, {"done_at": now.isoformat(), "by": actor})
        else:
            steps.pop(step, None)
    if body.status == "approved":
        missing = review.missing_steps(integ.data_access, steps)
        if missing:
            raise InvalidRequest("approval needs every review step recorded as done",
                                 code="review_incomplete", missing=missing)
    before = (integ.review_status, integ.review_deadline)
    integ.review_steps = steps
    if body.status is not None:
        integ.review_status = body.status
    if body.deadline is not None:
        integ.review_deadline = body.deadline
    await _changed(session, integ, actor, "integration.review_changed", now,
                   previous_status=before[0], status=integ.review_status,
                   previous_deadline=before[1].isoformat() if before[1] else None,
                   deadline=integ.review_deadline.isoformat() if integ.review_deadline else None,
                   steps=sorted(steps), note=body.note)
    await _deadline_moved(session, integ, before[1], now, base_url)
    return integ


async def _deadline_moved(session: AsyncSession, integ: Integration,
                          previous: datetime | None, now: datetime, base_url: str) -> None:
    """The admins of every plan it is installed in are told of a new deadline, once, while
    it is not approved (reminders)."""
    if (previous is None or integ.review_deadline is None or integ.review_deadline == previous
            or integ.review_status == "approved"):
        return
    await reminders.for_decision(session, "deadline_moved", integ,
                                 await reminders.installed_in(session, integ.id),
                                 iso(integ.review_deadline), now, base_url)


async def set_dpop_bound(session: AsyncSession, integration_id: uuid.UUID, bound: bool, *,
                         actor: str, now: datetime) -> Integration:
    """RFC 9449 §5.2: from now on every access token the integration gets is DPoP-bound (its
    token requests without a proof are refused), or no longer must be."""
    integ = await get(session, integration_id)
    if integ.dpop_bound_access_tokens != bound:
        integ.dpop_bound_access_tokens = bound
        await _changed(session, integ, actor, "integration.dpop_bound_set", now, bound=bound)
    return integ


async def set_exception(session: AsyncSession, integration_id: uuid.UUID,
                        until: datetime | None, *, actor: str, now: datetime,
                        base_url: str = "") -> Integration:
    integ = await get(session, integration_id)
    if until is not None and not review.exception_allowed(integ.data_access):
        raise InvalidRequest("integrations with extended data access cannot hold an exception",
                             code="exception_not_allowed")
    integ.exception_until = until
    await _changed(session, integ, actor, "integration.exception_set" if until else
                   "integration.exception_removed", now,
                   until=until.isoformat() if until else None)
    if until is not None:
        await reminders.for_decision(session, "exception_granted", integ,
                                     await reminders.installed_in(session, integ.id),
                                     iso(until), now, base_url, until=until)
    return integ


async def judge(session: AsyncSession, integration_id: uuid.UUID, body: JudgementIn | None, *,
                actor: str, now: datetime, base_url: str = "") -> Integration:
    """Judge (or, with None, un-judge) a custom integration as operated by a third party."""
    integ = await get(session, integration_id)
    if integ.kind != "custom":
        raise InvalidRequest("only custom integrations are judged; third-party ones are "
                             "reviewed as such", code="not_custom")
    if body is None:
        integ.judged_third_party_at = None
        integ.deactivation_scheduled_at = None
        await _changed(session, integ, actor, "integration.judgement_withdrawn", now)
        return integ
    previous = integ.review_deadline if integ.judged_third_party_at is not None else None
    integ.judged_third_party_at = now
    integ.deactivation_scheduled_at = body.deactivate_at
    integ.review_deadline = body.review_deadline or body.deactivate_at
    await _deadline_moved(session, integ, previous, now, base_url)
    await _changed(session, integ, actor, "integration.judged_third_party", now,
                   deactivate_at=body.deactivate_at.isoformat(),
                   review_deadline=integ.review_deadline.isoformat(), note=body.note)
    return integ


async def reports(session: AsyncSession, integration_id: uuid.UUID) -> list[ReportOut]:
    events = (await session.execute(
        select(AuditEvent).where(AuditEvent.action == REPORT_ACTION,
                                 AuditEvent.target_id == str(integration_id))
        .order_by(AuditEvent.occurred_at.desc()))).scalars()
    return [ReportOut(integration_id=integration_id, plan_id=e.plan_id, reported_by=e.actor,
                      message=e.detail.get("message", ""), reported_at=e.occurred_at)
            for e in events]


# --- a plan admin's side -------------------------------------------------------------------

async def _installed(session: AsyncSession, plan_id: uuid.UUID, integration_id: uuid.UUID,
                     *, lock: bool = False) -> tuple[Integration, Installation]:
    """The integration and its installation in the plan; with `lock`, the installation is
    locked until the transaction ends, so concurrent changes of its state run one after the
    other and each sees the state the previous one left (one audit event per real change)."""
    query = (select(Integration, Installation)
             .join(Installation, Installation.integration_id == Integration.id)
             .where(Installation.plan_id == plan_id, Integration.id == integration_id))
    if lock:
        await write_lock(session, Installation, (Installation.plan_id == plan_id)
                         & (Installation.integration_id == integration_id))
        query = query.with_for_update(of=Installation)
    row = (await session.execute(query)).first()
    if row is None:
        raise NotFound("no such integration in this plan")
    return row[0], row[1]


def _access_out(access: Access) -> AccessOut:
    return AccessOut(allowed=access.allowed, rule=access.rule, deadline=access.deadline,
                     description=access.describe())


def installation_out(integ: Integration, inst: Installation, now: datetime) -> InstallationOut:
    facts = facts_of(integ)
    return InstallationOut(
        integration_id=integ.id, client_id=integ.client_id, name=integ.name, kind=integ.kind,
        approved_scopes=list(inst.approved_scopes or ()),
        judged_third_party=facts.judged_third_party, data_access=integ.data_access,
        review_status=integ.review_status, review_deadline=integ.review_deadline,
        missing_steps=review.missing_steps(integ.data_access, integ.review_steps or {})
        if facts.subject_to_review else [],
        exception_until=integ.exception_until,
        deactivation_scheduled_at=integ.deactivation_scheduled_at, state=inst.state,
        deactivated_at=inst.deactivated_at, deactivation_reason=inst.deactivation_reason,
        keep_confirmed_at=inst.keep_confirmed_at,
        access=_access_out(decide(facts, inst.state, now)),
        needs_attention=review.needs_attention(facts, inst.state, now),
        actions=review.admin_actions(facts, inst.state, inst.keep_confirmed_at is not None, now,
                                     kind=integ.kind),
    )


# What a plan's listing shows of its integrations and their installations: one row of columns
# (no ORM objects, a statement built once), which stands for both in `installation_out`.
_LISTED = (
    select(Integration.id, Integration.client_id, Integration.name, Integration.kind,
           Integration.data_access, Integration.review_status, Integration.review_deadline,
           Integration.review_steps, Integration.exception_until,
           Integration.deactivation_scheduled_at, Integration.judged_third_party_at,
           Installation.approved_scopes, Installation.state, Installation.deactivated_at,
           Installation.deactivation_reason, Installation.keep_confirmed_at)
    .join(Installation, Installation.integration_id == Integration.id)
    .where(Installation.plan_id == bindparam("plan_id", type_=Uuid)))


async def list_for_plan(session: AsyncSession, plan_id: uuid.UUID, now: datetime,
                        kept: cache.TokenCache | None = None) -> list[InstallationOut]:
    """Every integration installed in the plan, as of `now`. With `kept` (the token cache),
    its rows as kept there while no change of the plan or of an integration has come since
    (every change of what is listed announces its integration: `cache.changed`)."""
    return views_of(await listed(session, plan_id, kept), now)


async def listed(session: AsyncSession, plan_id: uuid.UUID,
                 kept: cache.TokenCache | None = None) -> Sequence[Any]:
    """The rows `list_for_plan` shows: with `kept`, the same object for as long as it is kept
    (a page drawn from them is kept by them: `app.console.web.render_kept`)."""
    async def read() -> Sequence[Any]:
        return await rows(session, _LISTED, {"plan_id": plan_id})

    return await cache.read_plan(kept, "integrations", plan_id, read)


def views_of(found: Sequence[Any], now: datetime) -> list[InstallationOut]:
    """The rows as of `now`: those needing attention first, the nearest deadline first among
    them."""
    views = [installation_out(row, row, now) for row in found]
    far = datetime.max.replace(tzinfo=now.tzinfo)
    return sorted(views, key=lambda v: (not v.needs_attention, v.review_deadline or far, v.name))


def views_settled_until(found: Sequence[Any], now: datetime) -> datetime | None:
    """The first instant after `now` at which `views_of(found, ...)` may differ: time enters a
    view only through `access.decide` and `review.exception_runs`, which compare it with the
    review deadline and the exception date alone. None: never, while the rows hold."""
    return first_after((at for row in found for at in (row.review_deadline, row.exception_until)),
                       now)


async def deactivate(session: AsyncSession, plan_id: uuid.UUID, integration_id: uuid.UUID, *,
                     actor: str, now: datetime, reason: str) -> InstallationOut:
    integ, inst = await _installed(session, plan_id, integration_id, lock=True)
    if inst.state != "deactivated":
        inst.state, inst.deactivated_at = "deactivated", now
        inst.deactivated_by, inst.deactivation_reason = actor, reason
        await audit.record(session, actor, "installation.deactivated", plan_id, "integration",
                           integ.id, now, reason=reason)
        await cache.changed(session, integration_id=integ.id)
    return installation_out(integ, inst, now)


async def reactivate(session: AsyncSession, plan_id: uuid.UUID, integration_id: uuid.UUID, *,
                     actor: str, now: datetime) -> InstallationOut:
    integ, inst = await _installed(session, plan_id, integration_id, lock=True)
    if inst.state == "deactivated":
        if not review.may_reactivate(facts_of(integ), now):
            raise Conflict("the review deadline has passed and no exception runs; the "
                           "installation can no longer be reactivated",
                           code="reactivation_deadline_passed",
                           deadline=integ.review_deadline.isoformat()
                           if integ.review_deadline else None)
        inst.state, inst.deactivated_at = "active", None
        inst.deactivated_by = inst.deactivation_reason = None
        await audit.record(session, actor, "installation.reactivated", plan_id, "integration",
                           integ.id, now)
        await cache.changed(session, integration_id=integ.id)
    return installation_out(integ, inst, now)


async def confirm_keep(session: AsyncSession, plan_id: uuid.UUID, integration_id: uuid.UUID,
                       *, user_id: uuid.UUID | None, actor: str,
                       now: datetime) -> InstallationOut:
    integ, inst = await _installed(session, plan_id, integration_id, lock=True)
    if integ.judged_third_party_at is None:
        raise InvalidRequest("only an integration judged third-party needs confirming",
                             code="not_judged")
    inst.keep_confirmed_at, inst.keep_confirmed_by = now, user_id
    await audit.record(session, actor, "installation.keep_confirmed", plan_id, "integration",
                       integ.id, now)
    await cache.changed(session, integration_id=integ.id)  # the plans' lists show it
    return installation_out(integ, inst, now)


async def report_misjudgement(session: AsyncSession, plan_id: uuid.UUID,
                              integration_id: uuid.UUID, message: str, *, actor: str,
                              now: datetime) -> ReportOut:
    integ, _inst = await _installed(session, plan_id, integration_id)
    if integ.kind != "custom" or integ.judged_third_party_at is None:
        raise InvalidRequest("only a custom integration judged third-party can be reported",
                             code="not_judged")
    await audit.record(session, actor, REPORT_ACTION, plan_id, "integration", integ.id, now,
                       message=message)
    return ReportOut(integration_id=integ.id, plan_id=plan_id, reported_by=actor,
                     message=message, reported_at=now)


# --- exception requests: a plan admin asks, the operator decides ----------------------------

REQUEST_ACTION = "integration.exception_requested"
REFUSAL_ACTION = "integration.exception_refused"
GRANT_ACTION = "integration.exception_set"
# Open requests the operator's queue shows at most (the newest requests are read).
REQUESTS_READ = 500


async def request_exception(session: AsyncSession, plan_id: uuid.UUID,
                            integration_id: uuid.UUID, message: str, *, actor: str,
                            now: datetime) -> ExceptionRequestOut:
    """A plan admin asks the platform for an exception (limited-data integrations only, while
    not approved and no exception runs); the operator grants (`set_exception`) or refuses."""
    # Locked: concurrent requests of the plan run one after the other, and each sees the one
    # before it (one open request per plan and integration).
    integ, _inst = await _installed(session, plan_id, integration_id, lock=True)
    facts = facts_of(integ)
    if not review.exception_allowed(integ.data_access):
        raise InvalidRequest("integrations with extended data access cannot hold an exception",
                             code="exception_not_allowed")
    if not facts.subject_to_review or integ.review_status == "approved":
        raise InvalidRequest("this integration needs no exception", code="exception_not_needed")
    if review.exception_runs(facts, now):
        raise InvalidRequest("an exception already runs for this integration",
                             code="exception_running")
    if await _open_request(session, integration_id, plan_id) is not None:
        raise Conflict("this plan already asked for an exception; the platform has not "
                       "answered yet", code="exception_already_requested")
    await audit.record(session, actor, REQUEST_ACTION, plan_id, "integration", integ.id, now,
                       message=message)
    return ExceptionRequestOut(integration_id=integ.id, integration_name=integ.name,
                               plan_id=plan_id, requested_by=actor, message=message,
                               requested_at=now)


async def _decisions(session: AsyncSession, integration_ids: set[str]) -> list[AuditEvent]:
    if not integration_ids:
        return []
    return list((await session.execute(
        select(AuditEvent).where(AuditEvent.action.in_((REFUSAL_ACTION, GRANT_ACTION)),
                                 AuditEvent.target_id.in_(integration_ids)))).scalars())


def _still_open(request: AuditEvent, decisions: list[AuditEvent]) -> bool:
    """Not answered since: no exception granted for the integration, no refusal to the plan."""
    return not any(d.target_id == request.target_id and d.occurred_at >= request.occurred_at
                   and (d.action == GRANT_ACTION or d.plan_id == request.plan_id)
                   for d in decisions)


async def _open_request(session: AsyncSession, integration_id: uuid.UUID,
                        plan_id: uuid.UUID) -> AuditEvent | None:
    requests = list((await session.execute(
        select(AuditEvent).where(AuditEvent.action == REQUEST_ACTION,
                                 AuditEvent.plan_id == plan_id,
                                 AuditEvent.target_id == str(integration_id))
        .order_by(AuditEvent.occurred_at.desc()).limit(1))).scalars())
    if not requests:
        return None
    decisions = await _decisions(session, {str(integration_id)})
    return requests[0] if _still_open(requests[0], decisions) else None


async def open_requests(session: AsyncSession) -> list[ExceptionRequestOut]:
    """The exception requests the platform has not answered, oldest first."""
    requests = list((await session.execute(
        select(AuditEvent).where(AuditEvent.action == REQUEST_ACTION)
        .order_by(AuditEvent.occurred_at.desc()).limit(REQUESTS_READ))).scalars())
    decisions = await _decisions(session, {r.target_id for r in requests})
    names = dict((await session.execute(
        select(Integration.id, Integration.name).where(
            Integration.id.in_({uuid.UUID(r.target_id) for r in requests})))).all()) \
        if requests else {}
    return [ExceptionRequestOut(
        integration_id=uuid.UUID(r.target_id), integration_name=names.get(
            uuid.UUID(r.target_id), "?"), plan_id=r.plan_id, requested_by=r.actor,
        message=r.detail.get("message", ""), requested_at=r.occurred_at)
        for r in reversed(requests) if _still_open(r, decisions)]


async def refuse_exception(session: AsyncSession, integration_id: uuid.UUID,
                           plan_id: uuid.UUID, note: str | None, *, actor: str, now: datetime,
                           base_url: str = "") -> None:
    """The operator refuses a plan's open request; the plan's admins are told."""
    integ = await get(session, integration_id)
    if await _open_request(session, integration_id, plan_id) is None:
        raise NotFound("no open exception request of this plan for this integration")
    await audit.record(session, actor, REFUSAL_ACTION, plan_id, "integration", integ.id, now,
                       note=note)
    await reminders.for_decision(session, "exception_refused", integ, [plan_id], iso(now), now,
                                 base_url, note=note or "")
