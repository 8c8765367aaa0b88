"""Rule 6 as one pure function: every status x installation state x deadline/exception case."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.integrations.access import IntegrationFacts, ReviewStatus, Rule, decide
from app.integrations.review import may_reactivate, missing_steps

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
PAST, FUTURE = NOW - timedelta(days=1), NOW + timedelta(days=1)


def facts(kind="third_party", status="not_reviewed", deadline=None, exception=None,
          data="limited", judged=False) -> IntegrationFacts:
    return IntegrationFacts(kind=kind, review_status=status, review_deadline=deadline,
                            exception_until=exception, data_access=data,
                            judged_third_party=judged)


def expected(kind: str, judged: bool, status: str, state: str | None, deadline, exception,
             data: str) -> Rule | None:
    """The rule, written out independently of the implementation."""
    if status == "revoked":
        return Rule.review_revoked
    if state is None:
        return Rule.not_installed
    if state == "deactivated":
        return Rule.installation_deactivated
    reviewed = kind == "third_party" or judged
    if not reviewed or status == "approved":
        return None
    if deadline == FUTURE:
        return None
    if exception == FUTURE and data == "limited":
        return None
    return Rule.review_deadline_passed


CASES = list(itertools.product(
    ["third_party", "custom"], [False, True], [s.value for s in ReviewStatus],
    ["active", "deactivated", None], [None, PAST, FUTURE], [None, PAST, FUTURE],
    ["limited", "extended"]))


@pytest.mark.parametrize(("kind", "judged", "status", "state", "deadline", "exception", "data"),
                         CASES)
def test_every_case(kind, judged, status, state, deadline, exception, data) -> None:
    access = decide(facts(kind, status, deadline, exception, data, judged), state, NOW)
    rule = expected(kind, judged, status, state, deadline, exception, data)
    assert access.allowed is (rule is None)
    assert access.rule == rule


def test_refusals_name_the_deadline() -> None:
    access = decide(facts(deadline=PAST), "active", NOW)
    assert access.rule is Rule.review_deadline_passed and access.deadline == PAST
    access = decide(facts(deadline=PAST), "deactivated", NOW)
    assert access.deadline == PAST
    assert "deadline" in decide(facts(deadline=PAST), "active", NOW).describe()


def test_deadline_instant_itself_has_passed() -> None:
    assert not decide(facts(deadline=NOW), "active", NOW).allowed
    assert decide(facts(deadline=NOW), "active", NOW - timedelta(microseconds=1)).allowed


instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1),
                        timezones=st.just(UTC))


@given(st.sampled_from(list(ReviewStatus)), st.sampled_from(["active", "deactivated"]),
       st.one_of(st.none(), instants), st.one_of(st.none(), instants), instants,
       st.sampled_from(["limited", "extended"]), st.booleans())
def test_properties(status, state, deadline, exception, now, data, judged) -> None:
    for kind in ("third_party", "custom"):
        access = decide(facts(kind, status, deadline, exception, data, judged), state, now)
        if status is ReviewStatus.revoked:
            assert not access.allowed  # always, no exception
        if state == "deactivated":
            assert not access.allowed
        if kind == "custom" and not judged and status is not ReviewStatus.revoked:
            assert access.allowed is (state == "active")  # customer-operated: not reviewed
        if access.allowed and kind == "third_party" and status is not ReviewStatus.approved:
            # Unapproved third-party access only before a deadline or a limited exception.
            assert (deadline is not None and now < deadline) or \
                (exception is not None and now < exception and data == "limited")


def test_reactivation_only_before_the_deadline() -> None:
    assert may_reactivate(facts(deadline=FUTURE), NOW)
    assert not may_reactivate(facts(deadline=PAST), NOW)
    assert not may_reactivate(facts(status="revoked", deadline=FUTURE), NOW)
    assert may_reactivate(facts(kind="custom"), NOW)
    assert may_reactivate(facts(status="approved", deadline=PAST), NOW)


def test_approval_steps_depend_on_data_access() -> None:
    assert missing_steps("limited", {}) == ["business_verification", "terms_accepted", "review"]
    assert missing_steps("extended", {"business_verification": 1, "terms_accepted": 1,
                                      "review": 1}) == ["penetration_test",
                                                        "security_questionnaire"]
    assert missing_steps("limited", {"business_verification": 1, "terms_accepted": 1,
                                     "review": 1}) == []
