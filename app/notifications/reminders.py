"""Reminders to a plan's system admins about its integrations, through the outbox.

Each says one thing once, to each admin of the plan, in the admin's language:
- `attention`: an installed integration needs attention (not approved by its review, or
  refused now), with its deadline; a new deadline is a new reminder (`deadline_moved` when the
  admins were told of another one before);
- `deadline`: N days before that deadline (`TESSERA_REMINDER_DAYS`, e.g. 30 and 7), the
  nearest N only when several are already due (a first sweep a week before says "7 days");
- `deactivated`: the platform executed a scheduled deactivation;
- `exception_granted` / `exception_refused`: the operator's answer.

"Once" is the outbox's UNIQUE `topic`: what the reminder is about, to whom, for which deadline
or decision, so two workers or two clicks write one row. The time-driven ones (`attention`,
`deadline`) are written by a worker job (`sweep`); the others in the transaction of the
decision they tell about (`for_decision`). A reminder the admins were given in another form
(a deadline moved: no separate "needs attention" for the new deadline) is written as
`skipped`, so it is never sent later either.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.console.i18n import Speech
from app.db import session_scope
from app.integrations import review
from app.integrations.models import Installation, Integration
from app.integrations.service import facts_of
from app.notifications.messages import Email, iso
from app.notifications.models import OutboxMessage
from app.plans.models import Plan
from app.users.models import User


@dataclass(frozen=True, slots=True)
class About:
    """What a reminder is about: an integration installed in a plan."""

    integration_id: uuid.UUID
    integration_name: str
    plan_id: uuid.UUID
    plan_name: str
    deadline: datetime | None


def N_(message: str) -> str:  # noqa: N802 - gettext's name for "translated later"
    """Marks a message for the catalogue (`pybabel extract -k N_`); translated when sent."""
    return message


# The words of each kind, in English (the catalogue's key) with the facts as placeholders.
_SUBJECTS = {
    "attention": N_("%(name)s needs your attention before %(deadline)s"),
    "deadline_moved": N_("The deadline for %(name)s moved to %(deadline)s"),
    "deadline": N_("%(days)s days left to act on %(name)s"),
    "deactivated": N_("%(name)s was deactivated in %(plan)s"),
    "exception_granted": N_("An exception was granted for %(name)s until %(until)s"),
    "exception_refused": N_("The exception for %(name)s was refused"),
}
_BODIES = {
    "attention": N_("%(name)s, installed in %(plan)s, is not approved by the platform's "
                    "review. It keeps working until %(deadline)s; after that its calls are "
                    "refused unless its review is approved or an exception is granted."),
    "deadline_moved": N_("The review deadline of %(name)s, installed in %(plan)s, is now "
                         "%(deadline)s."),
    "deadline": N_("%(name)s, installed in %(plan)s, stops working on %(deadline)s unless its "
                   "review is approved or an exception is granted."),
    "deactivated": N_("%(name)s was deactivated in %(plan)s on the date the platform set: "
                      "%(why)s"),
    "exception_granted": N_("%(name)s keeps working in %(plan)s until %(until)s under an "
                            "exception."),
    "exception_refused": N_("The platform refused the exception requested for %(name)s in "
                            "%(plan)s. %(note)s"),
}
_FOOTER = N_("Open the Admin Center's integrations page: %(url)s")


def compose(kind: str, about: About, admin_email: str, language: str | None, base_url: str,
            **extra: Any) -> Email:  # noqa: ANN401
    """A reminder's mail, in the admin's language (English by default); dates in UTC."""
    speech = Speech(language if language in ("en", "fr") else "en")
    facts = {"name": about.integration_name, "plan": about.plan_name,
             "deadline": speech.written(about.deadline) if about.deadline else "-",
             **{k: (speech.written(v) if isinstance(v, datetime) else v)
                for k, v in extra.items()}}
    facts.setdefault("note", "")
    facts.setdefault("why", "")
    facts.setdefault("days", "")
    facts.setdefault("until", "-")
    body = "\n\n".join([
        speech.gettext(_BODIES[kind]) % facts,
        speech.gettext(_FOOTER) % {"url": f"{base_url.rstrip('/')}/console/admin/integrations"},
    ]) + "\n"
    return Email(to=admin_email, subject=speech.gettext(_SUBJECTS[kind]) % facts, body=body)


def topic(kind: str, about: About, admin_id: uuid.UUID, key: str) -> str:
    return f"{kind}:{about.integration_id}:{about.plan_id}:{admin_id}:{key}"


def row(kind: str, about: About, admin: User, key: str, at: datetime, now: datetime,
        base_url: str, *, status: str = "pending", **extra: Any) -> dict[str, Any]:  # noqa: ANN401
    email = compose(kind, about, admin.email, admin.locale, base_url, **extra)
    return {"id": uuid.uuid4(), "token_id": None, "kind": kind, "expires_at": at,
            "period": "", "topic": topic(kind, about, admin.id, key), "plan_id": about.plan_id,
            "recipient": admin.email, "subject": email.subject, "body": email.body,
            "status": status, "attempts": 0, "next_attempt_at": now, "created_at": now,
            "last_error": "told in another reminder" if status == "skipped" else None}


async def enqueue(session: AsyncSession, rows: list[dict[str, Any]]) -> int:
    """Insert reminders, each at most once (a `topic` written before inserts nothing); the
    number inserted."""
    if not rows:
        return 0
    rows = sorted(rows, key=lambda r: r["topic"])  # one order: concurrent writers never deadlock
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" \
        else sqlite.insert
    stmt = insert(OutboxMessage).on_conflict_do_nothing(index_elements=["topic"]) \
        .returning(OutboxMessage.id)
    inserted = 0
    for one in rows:  # RETURNING per row: SQLite returns nothing for a multi-row conflict
        inserted += len((await session.execute(stmt.values(**one))).all())
    return inserted


async def admins(session: AsyncSession, plan_id: uuid.UUID) -> list[User]:
    return list((await session.execute(
        select(User).where(User.plan_id == plan_id, User.role == "admin")
        .order_by(User.created_at, User.id))).scalars())


async def about(session: AsyncSession, integ: Integration, plan_id: uuid.UUID) -> About:
    plan_name = (await session.execute(
        select(Plan.name).where(Plan.id == plan_id))).scalar_one()
    return About(integ.id, integ.name, plan_id, plan_name, integ.review_deadline)


async def for_decision(session: AsyncSession, kind: str, integ: Integration,
                       plan_ids: list[uuid.UUID], key: str, now: datetime, base_url: str,
                       **extra: Any) -> int:  # noqa: ANN401
    """Tell every admin of these plans of a decision, in the decision's transaction. A moved
    deadline also stands for the "needs attention" reminder of the new deadline."""
    rows = []
    for plan_id in plan_ids:
        subject = await about(session, integ, plan_id)
        for admin in await admins(session, plan_id):
            rows.append(row(kind, subject, admin, key, now, now, base_url, **extra))
            if kind == "deadline_moved" and subject.deadline is not None:
                rows.append(row("attention", subject, admin, iso(subject.deadline),
                                subject.deadline, now, base_url, status="skipped"))
    return await enqueue(session, rows)


async def installed_in(session: AsyncSession, integration_id: uuid.UUID) -> list[uuid.UUID]:
    return list((await session.execute(
        select(Installation.plan_id).where(Installation.integration_id == integration_id)
        .order_by(Installation.plan_id))).scalars())


def due_days(deadline: datetime, now: datetime, lead_days: tuple[int, ...]) -> int | None:
    """The nearest reminder already due before `deadline`, in days (None: none yet, or the
    deadline passed)."""
    if now >= deadline:
        return None
    due = [d for d in lead_days if now >= deadline - timedelta(days=d)]
    return min(due) if due else None


async def sweep(maker: async_sessionmaker[AsyncSession], *, now: datetime, base_url: str,
                lead_days: tuple[int, ...], batch_size: int = 500) -> Counter[str]:
    """Write the `attention` and `deadline` reminders due now for every installation needing
    attention (installations of integrations not approved by their review: few)."""
    stats: Counter[str] = Counter()
    after = None
    while True:
        async with session_scope(maker) as session:
            query = (select(Installation, Integration, Plan.name)
                     .join(Integration, Integration.id == Installation.integration_id)
                     .join(Plan, Plan.id == Installation.plan_id)
                     .where(Integration.review_status != "approved",
                            Integration.review_deadline.is_not(None))
                     .order_by(Installation.id).limit(batch_size))
            if after is not None:
                query = query.where(Installation.id > after)
            found = (await session.execute(query)).all()
            for inst, integ, plan_name in found:
                after = inst.id
                if not review.needs_attention(facts_of(integ), inst.state, now):
                    continue
                subject = About(integ.id, integ.name, inst.plan_id, plan_name,
                                integ.review_deadline)
                days = due_days(integ.review_deadline, now, lead_days)
                deadline = iso(integ.review_deadline)
                for admin in await admins(session, inst.plan_id):
                    told = await enqueue(session, [row("attention", subject, admin, deadline,
                                                       integ.review_deadline, now, base_url)])
                    stats["reminders"] += told
                    if days is not None:
                        # Told just now, deadline included: the countdown's reminder is
                        # recorded as given, not sent beside it.
                        stats["reminders"] += await enqueue(session, [row(
                            "deadline", subject, admin, f"{days}:{deadline}",
                            integ.review_deadline, now, base_url, days=days,
                            status="skipped" if told else "pending")])
        if len(found) < batch_size:
            return stats
