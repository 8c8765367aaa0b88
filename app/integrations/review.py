"""The platform review of an integration (rules 6-7, docs/design.md), as pure functions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from app.integrations.access import IntegrationFacts, ReviewStatus, Rule, decide


class Step(StrEnum):
    business_verification = "business_verification"
    terms_accepted = "terms_accepted"
    review = "review"
    penetration_test = "penetration_test"
    security_questionnaire = "security_questionnaire"


BASE_STEPS = (Step.business_verification, Step.terms_accepted, Step.review)
EXTENDED_STEPS = (*BASE_STEPS, Step.penetration_test, Step.security_questionnaire)


def required_steps(data_access: str) -> tuple[Step, ...]:
    """Extended data access also needs a third-party penetration test and a questionnaire."""
    return EXTENDED_STEPS if data_access == "extended" else BASE_STEPS


def missing_steps(data_access: str, done: dict[str, object]) -> list[str]:
    return [s.value for s in required_steps(data_access) if not done.get(s.value)]


def exception_allowed(data_access: str) -> bool:
    """Only limited-data integrations may be granted an exception."""
    return data_access == "limited"


def exception_runs(integ: IntegrationFacts, now: datetime) -> bool:
    """A limited-data exception whose date has not passed (rule 6)."""
    return (integ.exception_until is not None and exception_allowed(integ.data_access)
            and now < integ.exception_until)


def may_reactivate(integ: IntegrationFacts, now: datetime) -> bool:
    """Rule 7: while the review deadline has not passed, or an exception runs (never for a
    revoked review): exactly when reactivating would let it work again."""
    return decide(integ, "active", now).allowed


def spared_from_scheduled_deactivation(integ: IntegrationFacts, now: datetime) -> bool:
    """A scheduled deactivation (of a custom integration judged third-party) waits while the
    integration would still be allowed: approved by its review, or holding a running exception.
    It runs once neither holds."""
    return integ.review_status == ReviewStatus.approved or exception_runs(integ, now)


def needs_attention(integ: IntegrationFacts, installation_state: str | None,
                    now: datetime) -> bool:
    """Refused now, or subject to review and not yet approved."""
    if not decide(integ, installation_state, now).allowed:
        return True
    return integ.subject_to_review and integ.review_status != ReviewStatus.approved


def admin_actions(integ: IntegrationFacts, installation_state: str | None,
                  confirmed_keep: bool, now: datetime, *, kind: str) -> list[str]:
    actions: list[str] = []
    if installation_state == "deactivated" and may_reactivate(integ, now):
        actions.append("reactivate")
    if installation_state == "active":
        actions.append("deactivate")
    if integ.judged_third_party and kind == "custom":
        actions.append("report_misjudgement")
        if installation_state == "active" and not confirmed_keep:
            actions.append("confirm_keep")
    if installation_state is not None and may_request_exception(integ, now):
        actions.append("request_exception")
    return actions


def may_request_exception(integ: IntegrationFacts, now: datetime) -> bool:
    """A plan admin may ask for an exception: limited data, subject to review and not
    approved, and no exception running."""
    return (exception_allowed(integ.data_access) and integ.subject_to_review
            and integ.review_status != ReviewStatus.approved
            and not exception_runs(integ, now))


__all__ = ["Rule", "Step", "admin_actions", "exception_allowed", "exception_runs",
           "may_reactivate", "may_request_exception", "missing_steps", "needs_attention",
           "required_steps", "spared_from_scheduled_deactivation"]
