"""The text of an expiry notice (rule 5, docs/design.md), composed from facts with no I/O.

A notice says which token (its name and last four characters, never the secret), the exact
effective expiry in UTC, why it expires then (the plan's period counted from the token's
generation, or the token's own lifetime), and how to get a new one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from app.plans.expiry import Period, Unit, add_period


class NoticeKind(StrEnum):
    expiring = "expiring"  # `notice_lead_days` before the effective expiry
    expired = "expired"


@dataclass(frozen=True, slots=True)
class NoticeFacts:
    kind: NoticeKind
    token_id: uuid.UUID
    token_kind: str  # personal | integration
    token_name: str | None
    token_hint: str
    plan_id: uuid.UUID
    issued_at: datetime
    expires_at: datetime  # the effective expiry (rule 1) the notice is about
    period: Period | None  # the plan's period it was computed under
    recipient_name: str | None = None
    integration_id: uuid.UUID | None = None
    integration_name: str | None = None
    period_set_at: datetime | None = None  # when `period` was set
    cut_short: bool = False  # `period` had already run out for the token when it was set


@dataclass(frozen=True, slots=True)
class Email:
    to: str
    subject: str
    body: str
    message_id: str | None = None  # stable per outbox row, so a resend can be recognised


def iso(at: datetime) -> str:
    """Exact UTC ISO 8601 with a `Z`, e.g. 2026-04-15T12:00:00Z."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def period_key(period: Period | None) -> str:
    """A canonical name for a period: equal durations get equal names ("168 hours" and
    "7 days" are both "7 days"; "24 months" is "2 years"), "none" for no period."""
    if period is None:
        return "none"
    if period.unit in (Unit.months, Unit.years):
        months = period.value * (12 if period.unit is Unit.years else 1)
        return Period(months // 12, Unit.years).describe() if months % 12 == 0 \
            else Period(months, Unit.months).describe()
    minutes = period.value * {Unit.minutes: 1, Unit.hours: 60, Unit.days: 1440}[period.unit]
    if minutes % 1440 == 0:
        return Period(minutes // 1440, Unit.days).describe()
    if minutes % 60 == 0:
        return Period(minutes // 60, Unit.hours).describe()
    return Period(minutes, Unit.minutes).describe()


def _what(facts: NoticeFacts) -> str:
    name = f'"{facts.token_name}"' if facts.token_name else "(unnamed)"
    if facts.token_kind == "integration":
        integration = f' of the integration "{facts.integration_name}"' \
            if facts.integration_name else ""
        return f"integration token {name}{integration}, ending in {facts.token_hint}"
    return f"personal API token {name}, ending in {facts.token_hint}"


def reason(facts: NoticeFacts) -> str:
    """Why the token expires then: which term of rule 1 decided it, and, when a period change
    cut it short, which change (rule 4)."""
    if facts.cut_short and facts.period is not None and facts.period_set_at is not None:
        return (f"the plan's expiration period was set to {facts.period.describe()} on "
                f"{iso(facts.period_set_at)}; counted from the token's generation on "
                f"{iso(facts.issued_at)}, that period had already run out")
    if facts.period is not None and add_period(facts.issued_at, facts.period) == facts.expires_at:
        return (f"the plan's expiration period of {facts.period.describe()} counted from the "
                f"token's generation on {iso(facts.issued_at)}")
    return f"the token's own lifetime, fixed when it was generated on {iso(facts.issued_at)}"


def renewal(facts: NoticeFacts, base_url: str) -> str:
    """How to get a new token: an expired token is never extended (rule 3)."""
    base = base_url.rstrip("/")
    if facts.token_kind == "integration":
        where = (f"POST {base}/v1/plans/{facts.plan_id}/integrations/"
                 f"{facts.integration_id}/tokens")
        who = "A system admin of the plan can generate a new token for the integration"
    else:
        where = f"POST {base}/v1/me/tokens"
        who = "Generate a new personal token"
    return (f"{who}:\n\n    {where}\n\nthen put it wherever the old one is used. "
            "An expired token cannot be extended.")


def compose(facts: NoticeFacts, *, to: str, base_url: str) -> Email:
    what = _what(facts)
    when = iso(facts.expires_at)
    if facts.kind is NoticeKind.expiring:
        subject = f"Your Tessera token ending in {facts.token_hint} expires at {when}"
        opening = f"Your {what}, expires at {when} (UTC)."
        after = "From then on, every request made with it will be refused."
    else:
        subject = f"Your Tessera token ending in {facts.token_hint} has expired"
        opening = f"Your {what}, expired at {when} (UTC)."
        if facts.cut_short and facts.period is not None and facts.period_set_at is not None:
            opening = (f"Your {what}, expired at {when} (UTC) because the plan's period was "
                       f"set to {facts.period.describe()} on {iso(facts.period_set_at)}.")
        after = ("Every request made with it is now refused. It stays expired: a later change "
                 "of the plan's period does not bring it back.")
    greeting = f"Hello {facts.recipient_name}," if facts.recipient_name else "Hello,"
    why_you = "generated this integration token" if facts.token_kind == "integration" \
        else "own this token"
    body = "\n\n".join([
        greeting,
        opening,
        f"Why: {reason(facts)}.",
        after,
        renewal(facts, base_url),
        f"Token id: {facts.token_id}\nPlan id: {facts.plan_id}",
        f"-- \nTessera. You receive this because you {why_you}.",
    ]) + "\n"
    return Email(to=to, subject=subject, body=body)
