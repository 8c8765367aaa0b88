"""A token's facts are a named tuple whose last field, the effective expiry, is computed from
the others when they are made: every copy computes it anew (a stale expiry would let a token
outlive its period), and copying or pickling works."""

from __future__ import annotations

import copy
import pickle
from datetime import UTC, datetime, timedelta

from app.plans.expiry import Period, Unit
from app.tokens.rules import TokenFacts

ISSUED = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


def facts(period: Period | None) -> TokenFacts:
    return TokenFacts(kind="personal", issued_at=ISSUED, expires_at=None, revoked_at=None,
                      used_at=None, period=period)


def test_the_expiry_is_computed_when_the_facts_are_made() -> None:
    assert facts(None).expiry is None
    assert facts(Period(1, Unit.months)).expiry == datetime(2026, 2, 28, 23, 59, 59, 999_999,
                                                            tzinfo=UTC)
    own = ISSUED + timedelta(days=3)
    made = TokenFacts("access", ISSUED, own, None, None, Period(1, Unit.years))
    assert made.expiry == own  # the earlier of its own lifetime and the period's


def test_a_replaced_period_gives_a_new_expiry() -> None:
    long = facts(Period(1, Unit.years))
    short = long._replace(period=Period(2, Unit.days))
    assert short.expiry == ISSUED + timedelta(days=2)
    assert short.kind == long.kind and short.issued_at == ISSUED
    assert long._replace(period=None).expiry is None
    assert TokenFacts._make(tuple(short)[:-1]) == short


def test_copies_and_pickles_are_equal_and_keep_their_expiry() -> None:
    made = facts(Period(3, Unit.hours))
    for twin in (copy.copy(made), copy.deepcopy(made), pickle.loads(pickle.dumps(made))):
        assert twin == made and type(twin) is TokenFacts
        assert twin.expiry == ISSUED + timedelta(hours=3)
