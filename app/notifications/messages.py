"""The text of an expiry notice (rule 5, docs/design.md), composed from facts with no I/O.

A notice says which token (its name and last four characters, never the secret), the exact
effective expiry in UTC, why it expires then (the plan's period counted from the token's
generation, or the token's own lifetime), and how to get a new one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
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


def N_(message: str) -> str:  # noqa: N802 - gettext's name for "translated later"
    """Marks a message for the catalogue (`pybabel extract -k N_`)."""
    return message


def _tr(language: str | None) -> Callable[[str], str]:
    from app.console.i18n import Speech  # the catalogues; English needs none

    return Speech(language).gettext if language and language != "en" else (lambda m: m)


def describe(period: Period, language: str | None = None) -> str:
    """A period in words: "90 days", "1 month" ("90 jours", "1 mois")."""
    if not language or language == "en":
        return period.describe()
    _ = _tr(language)
    one = {"minutes": N_("minute"), "hours": N_("hour"), "days": N_("day"),
           "months": N_("month"), "years": N_("year")}[period.unit.value]
    return f"{period.value} {_(one) if period.value == 1 else _(period.unit.value)}"


def _what(facts: NoticeFacts, language: str | None = None) -> str:
    _ = _tr(language)
    name = f'"{facts.token_name}"' if facts.token_name else _(N_("(unnamed)"))
    if facts.token_kind == "integration":
        if facts.integration_name:
            return _(N_('integration token %(name)s of the integration "%(integration)s", '
                        "ending in %(hint)s")) % {"name": name, "hint": facts.token_hint,
                                                  "integration": facts.integration_name}
        return _(N_("integration token %(name)s, ending in %(hint)s")) % {
            "name": name, "hint": facts.token_hint}
    return _(N_("personal API token %(name)s, ending in %(hint)s")) % {
        "name": name, "hint": facts.token_hint}


def reason(facts: NoticeFacts, language: str | None = None) -> str:
    """Why the token expires then: which term of rule 1 decided it, and, when a period change
    cut it short, which change (rule 4)."""
    _ = _tr(language)
    if facts.cut_short and facts.period is not None and facts.period_set_at is not None:
        return _(N_("the plan's expiration period was set to %(period)s on %(set_at)s; counted "
                    "from the token's generation on %(issued_at)s, that period had already run "
                    "out")) % {"period": describe(facts.period, language),
                               "set_at": iso(facts.period_set_at),
                               "issued_at": iso(facts.issued_at)}
    if facts.period is not None and add_period(facts.issued_at, facts.period) == facts.expires_at:
        return _(N_("the plan's expiration period of %(period)s counted from the token's "
                    "generation on %(issued_at)s")) % {
            "period": describe(facts.period, language), "issued_at": iso(facts.issued_at)}
    return _(N_("the token's own lifetime, fixed when it was generated on %(issued_at)s")) % {
        "issued_at": iso(facts.issued_at)}


def renewal(facts: NoticeFacts, base_url: str, language: str | None = None) -> str:
    """How to get a new token: an expired token is never extended (rule 3)."""
    _ = _tr(language)
    base = base_url.rstrip("/")
    if facts.token_kind == "integration":
        where = (f"POST {base}/v1/plans/{facts.plan_id}/integrations/"
                 f"{facts.integration_id}/tokens")
        who = _(N_("A system admin of the plan can generate a new token for the integration"))
    else:
        where = f"POST {base}/v1/me/tokens"
        who = _(N_("Generate a new personal token"))
    return (f"{who}:\n\n    {where}\n\n" + _(N_("then put it wherever the old one is used. "
                                                 "An expired token cannot be extended.")))


def compose(facts: NoticeFacts, *, to: str, base_url: str,
            language: str | None = None) -> Email:
    """The notice's mail, in the recipient's language (English by default)."""
    _ = _tr(language)
    what = _what(facts, language)
    when = iso(facts.expires_at)
    words = {"what": what, "when": when, "hint": facts.token_hint}
    if facts.kind is NoticeKind.expiring:
        subject = _(N_("Your Tessera token ending in %(hint)s expires at %(when)s")) % words
        opening = _(N_("Your %(what)s, expires at %(when)s (UTC).")) % words
        after = _(N_("From then on, every request made with it will be refused."))
    else:
        subject = _(N_("Your Tessera token ending in %(hint)s has expired")) % words
        opening = _(N_("Your %(what)s, expired at %(when)s (UTC).")) % words
        if facts.cut_short and facts.period is not None and facts.period_set_at is not None:
            opening = _(N_("Your %(what)s, expired at %(when)s (UTC) because the plan's period "
                           "was set to %(period)s on %(set_at)s.")) % {
                **words, "period": describe(facts.period, language),
                "set_at": iso(facts.period_set_at)}
        after = _(N_("Every request made with it is now refused. It stays expired: a later "
                     "change of the plan's period does not bring it back."))
    greeting = (_(N_("Hello %(name)s,")) % {"name": facts.recipient_name}
                if facts.recipient_name else _(N_("Hello,")))
    why_you = _(N_("generated this integration token")) if facts.token_kind == "integration" \
        else _(N_("own this token"))
    body = "\n\n".join([
        greeting,
        opening,
        _(N_("Why: %(reason)s.")) % {"reason": reason(facts, language)},
        after,
        renewal(facts, base_url, language),
        _(N_("Token id: %(token)s\nPlan id: %(plan)s")) % {"token": facts.token_id,
                                                          "plan": facts.plan_id},
        "-- \n" + _(N_("Tessera. You receive this because you %(why)s.")) % {"why": why_you},
    ]) + "\n"
    return Email(to=to, subject=subject, body=body)
