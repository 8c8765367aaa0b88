"""Rule 1: the expiry arithmetic, worked examples and properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.plans.expiry import (
    MAX_VALUE,
    Period,
    Unit,
    add_months,
    add_period,
    effective_expiry,
    is_expired,
    latest_issue_expired_by,
    preview_bucket,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def END_OF(year: int, month: int, day: int) -> datetime:  # noqa: N802 - reads as a date
    return datetime(year, month, day, 23, 59, 59, 999_999, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "period", "expected"),
    [
        # A day the target month lacks: the end of its last day (never backwards, rule 4).
        (utc(2025, 1, 31), Period(1, Unit.months), END_OF(2025, 2, 28)),
        (utc(2024, 1, 31), Period(1, Unit.months), END_OF(2024, 2, 29)),
        (utc(2024, 2, 29), Period(1, Unit.years), END_OF(2025, 2, 28)),
        (utc(2024, 2, 29), Period(4, Unit.years), utc(2028, 2, 29)),
        (utc(2025, 3, 31, 10, 30), Period(1, Unit.months), END_OF(2025, 4, 30)),
        (utc(2025, 1, 28, 23, 30), Period(1, Unit.months), utc(2025, 2, 28, 23, 30)),
        (utc(2025, 12, 15), Period(1, Unit.months), utc(2026, 1, 15)),
        (utc(2025, 11, 30), Period(3, Unit.months), END_OF(2026, 2, 28)),
        (utc(2025, 1, 1), Period(90, Unit.days), utc(2025, 4, 1)),
        (utc(2025, 1, 1), Period(36, Unit.hours), utc(2025, 1, 2, 12)),
        (utc(2025, 1, 1), Period(90, Unit.minutes), utc(2025, 1, 1, 1, 30)),
    ],
)
def test_worked_examples(start: datetime, period: Period, expected: datetime) -> None:
    assert add_period(start, period) == expected


def test_months_use_utc_even_for_other_zones() -> None:
    tz = timezone_plus(-5)
    # 2025-01-31 22:00 at UTC-5 is 2025-02-01 03:00 UTC: one month on is 2025-03-01 03:00 UTC.
    assert add_period(datetime(2025, 1, 31, 22, tzinfo=tz), Period(1, Unit.months)) == \
        utc(2025, 3, 1, 3)


def timezone_plus(hours: int):  # noqa: ANN201
    from datetime import timezone

    return timezone(timedelta(hours=hours))


@pytest.mark.parametrize("value", [0, -1, -90])
def test_non_positive_periods_are_refused(value: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        Period(value, Unit.days)


@pytest.mark.parametrize("unit", list(Unit))
def test_periods_past_100_years_are_refused(unit: Unit) -> None:
    Period(MAX_VALUE[unit], unit)
    with pytest.raises(ValueError, match="100 years"):
        Period(MAX_VALUE[unit] + 1, unit)


def test_effective_expiry_is_the_earliest() -> None:
    issued = utc(2025, 1, 1)
    assert effective_expiry(issued, None, None) is None
    assert effective_expiry(issued, utc(2025, 1, 1, 1), None) == utc(2025, 1, 1, 1)
    assert effective_expiry(issued, None, Period(1, Unit.days)) == utc(2025, 1, 2)
    assert effective_expiry(issued, utc(2025, 1, 1, 1), Period(1, Unit.days)) == utc(2025, 1, 1, 1)
    assert effective_expiry(issued, utc(2025, 3, 1), Period(1, Unit.days)) == utc(2025, 1, 2)


def test_expiry_instant_itself_is_expired() -> None:
    at = utc(2025, 1, 2)
    assert not is_expired(at, at - timedelta(microseconds=1))
    assert is_expired(at, at)
    assert not is_expired(None, at)


def test_preview_buckets() -> None:
    now = utc(2025, 6, 1)
    assert preview_bucket(None, now) == "never_expire"
    assert preview_bucket(now, now) == "expire_immediately"
    assert preview_bucket(now + timedelta(days=7), now) == "expire_within_7_days"
    assert preview_bucket(now + timedelta(days=7, seconds=1), now) == "expire_later"


instants = st.datetimes(min_value=datetime(1950, 1, 1), max_value=datetime(2200, 12, 31),
                        timezones=st.just(UTC))
periods = st.builds(
    lambda unit, frac: Period(max(1, int(MAX_VALUE[unit] * frac)), unit),
    st.sampled_from(list(Unit)), st.floats(min_value=0, max_value=1),
)
small_periods = st.builds(Period, st.integers(1, 48), st.sampled_from(list(Unit)))


@given(instants, periods)
def test_period_always_moves_forward(at: datetime, period: Period) -> None:
    assert add_period(at, period) > at


@given(instants, st.integers(0, 1200))
def test_months_keep_day_and_time_or_clamp_to_the_months_end(at: datetime, months: int) -> None:
    result = add_months(at, months)
    assert (result.year * 12 + result.month) - (at.year * 12 + at.month) == months
    if result.day == at.day:
        assert result.time() == at.time()
    else:  # clamped: the last instant of the target month
        assert result.day < at.day
        assert (result + timedelta(microseconds=1)).month != result.month


@pytest.mark.parametrize("months", [1, 2, 12, 13, 24])
def test_months_never_move_backwards_at_a_months_end(months: int) -> None:
    """Around every month's end, minute by minute: a later generation time never expires
    earlier (with the time of day kept on a clamped day, Jan 30 23:00 + 1 month would come after
    Jan 31 00:00 + 1 month)."""
    for year in (2027, 2028):
        for month in range(1, 13):
            start = datetime(year, month, 1, tzinfo=UTC) - timedelta(days=4)
            times = [start + timedelta(minutes=17 * i) for i in range(4 * 24 * 60 // 17)]
            ends = [add_months(t, months) for t in times]
            assert ends == sorted(ends), (year, month)


@given(instants, instants, small_periods)
def test_monotone_in_issue_time(a: datetime, b: datetime, period: Period) -> None:
    lo, hi = sorted((a, b))
    assert add_period(lo, period) <= add_period(hi, period)


@given(instants, small_periods)
def test_latest_issue_threshold_is_exact(at: datetime, period: Period) -> None:
    t = latest_issue_expired_by(period, at)
    assert add_period(t, period) <= at
    assert add_period(t + timedelta(microseconds=1), period) > at


@given(instants, st.integers(1, 100))
def test_years_equal_twelve_months(at: datetime, years: int) -> None:
    assert add_period(at, Period(years, Unit.years)) == add_period(at, Period(12 * years,
                                                                              Unit.months))
