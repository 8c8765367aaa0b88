"""Rule 6 of docs/design.md: may a call made by, or with a token of, this integration go through?

One pure function of the integration, its installation in the plan, and the time.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import NamedTuple


class ReviewStatus(StrEnum):
    not_reviewed = "not_reviewed"
    in_review = "in_review"
    approved = "approved"
    not_approved = "not_approved"
    revoked = "revoked"


class Rule(StrEnum):
    review_revoked = "review_revoked"
    installation_deactivated = "installation_deactivated"
    not_installed = "not_installed"
    review_deadline_passed = "review_deadline_passed"


class IntegrationFacts(NamedTuple):
    """What rule 6 reads of an integration. Immutable (cached with its tokens); a named tuple,
    made in C, as `TokenFacts`: one per row of a listing of OAuth tokens."""

    kind: str  # custom | third_party
    review_status: str
    review_deadline: datetime | None
    exception_until: datetime | None
    data_access: str  # limited | extended
    judged_third_party: bool

    @property
    def subject_to_review(self) -> bool:
        """Third-party, or custom but judged by the platform to be operated by a third party."""
        return self.kind == "third_party" or self.judged_third_party


class Access(NamedTuple):
    """Rule 6's answer (a named tuple, as `IntegrationFacts`)."""

    allowed: bool
    rule: Rule | None = None
    deadline: datetime | None = None

    def describe(self) -> str:
        if self.allowed:
            return "allowed"
        match self.rule:
            case Rule.review_revoked:
                return "the integration's platform review was revoked"
            case Rule.installation_deactivated:
                return "the integration's installation in this plan is deactivated"
            case Rule.not_installed:
                return "the integration is not installed in this plan"
            case Rule.review_deadline_passed:
                return "the integration is not approved and its review deadline has passed"
        return "refused"  # pragma: no cover


def decide(integ: IntegrationFacts, installation_state: str | None, now: datetime) -> Access:
    if integ.review_status == ReviewStatus.revoked:
        return Access(False, Rule.review_revoked)
    if installation_state is None:
        return Access(False, Rule.not_installed)
    if installation_state == "deactivated":
        return Access(False, Rule.installation_deactivated, integ.review_deadline)
    if not integ.subject_to_review or integ.review_status == ReviewStatus.approved:
        return Access(True)
    if integ.review_deadline is not None and now < integ.review_deadline:
        return Access(True, deadline=integ.review_deadline)
    if (
        integ.exception_until is not None
        and integ.data_access == "limited"
        and now < integ.exception_until
    ):
        return Access(True, deadline=integ.exception_until)
    return Access(False, Rule.review_deadline_passed, integ.review_deadline)
