"""The expiry rules (docs/design.md, rules 1, 2 and 4), as pure functions with no I/O.

Minutes, hours and days are exact durations. Months and years are calendar arithmetic in UTC,
clamped to the last day of the target month: Jan 31 + 1 month = Feb 28 (or 29), Feb 29 + 1 year
= Feb 28. A clamped result is the *end* of that last day (23:59:59.999999), so that the
arithmetic never moves backwards: with the time of day kept, Jan 30 23:00 + 1 month would be
Feb 28 23:00, later than Jan 31 00:00 + 1 month (Feb 28 00:00), and a later generation time
would expire earlier. Rule 4's cut-offs need "expired by t" to be "generated at or before t'".

Expiry is final (rule 4): a token is dead for good from the first instant it is expired under the
period then in force. A check stays constant-time: each period change records the cut-off of
generation times the outgoing period had expired by then (`latest_issue_expired_by`), and the
plan keeps the latest cut-off (`expired_through`); a token generated at or before it is expired
whatever the period is now. The spells of past periods (`Spell`) are kept only to say *when*
and *why* a token died (`death`).
"""

from __future__ import annotations

import calendar
import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum


class Unit(StrEnum):
    minutes = "minutes"
    hours = "hours"
    days = "days"
    months = "months"
    years = "years"


# The longest period accepted, per unit: 100 years, and no more.
MAX_VALUE: dict[Unit, int] = {
    Unit.years: 100,
    Unit.months: 100 * 12,
    Unit.days: 36_524,  # 100 Gregorian years, 24 leap days, rounded down
    Unit.hours: 36_524 * 24,
    Unit.minutes: 36_524 * 24 * 60,
}


@dataclass(frozen=True, slots=True)
class Period:
    value: int
    unit: Unit

    def __post_init__(self) -> None:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise TypeError("period value must be an integer")
        if self.value <= 0:
            raise ValueError("period value must be a positive integer")
        if self.value > MAX_VALUE[self.unit]:
            limit = MAX_VALUE[self.unit]
            raise ValueError(f"period may not exceed 100 years ({limit} {self.unit})")

    def describe(self) -> str:
        unit = self.unit.value[:-1] if self.value == 1 else self.unit.value
        return f"{self.value} {unit}"


# Days of each month of a common year (`calendar.monthrange` computes a weekday besides).
_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def add_months(at: datetime, months: int) -> datetime:
    """Calendar month arithmetic; a day the target month lacks is clamped to the end of its last
    day (the module's docstring says why)."""
    year, month = divmod(at.year * 12 + at.month + months - 1, 12)
    month += 1
    day = at.day
    if day > 28:  # every month has 28 days: only a later day may need its month's length
        last = 29 if month == 2 and calendar.isleap(year) else _DAYS_IN_MONTH[month]
        if day > last:
            return at.replace(year=year, month=month, day=last, hour=23, minute=59, second=59,
                              microsecond=999_999)
    # The constructor, not `at.replace(...)`: half the time, for every token of a listing.
    return datetime(year, month, day, at.hour, at.minute, at.second, at.microsecond, at.tzinfo,
                    fold=at.fold)


# Months per unit of calendar arithmetic; the other units are exact durations.
_MONTHS = {Unit.months: 1, Unit.years: 12}
_DURATIONS = {Unit.minutes: timedelta(minutes=1), Unit.hours: timedelta(hours=1),
              Unit.days: timedelta(days=1)}


def add_period(at: datetime, period: Period) -> datetime:
    """`at + period` in UTC. `at` must be timezone-aware."""
    if at.tzinfo is not UTC:
        if at.tzinfo is None:
            raise ValueError("naive datetime")
        at = at.astimezone(UTC)
    months = _MONTHS.get(period.unit)
    if months is None:
        return at + _DURATIONS[period.unit] * period.value
    return add_months(at, months * period.value)


def effective_expiry(
    issued_at: datetime, intrinsic_expiry: datetime | None, period: Period | None
) -> datetime | None:
    """Rule 1: the earliest of the intrinsic expiry and `issued_at + plan period`; None = never."""
    if period is None:
        return intrinsic_expiry
    by_policy = add_period(issued_at, period)
    if intrinsic_expiry is not None and intrinsic_expiry <= by_policy:
        return intrinsic_expiry
    return by_policy


_MICRO = timedelta(microseconds=1)


def latest_issue_expired_by(period: Period, at: datetime) -> datetime:
    """The latest issue time `t` with `add_period(t, period) <= at`.

    `add_period` is monotone in `t`, so the tokens a period has expired by `at` are exactly those
    issued at or before this instant: a range over the `issued_at` index instead of a row scan.
    """
    at = at.astimezone(UTC)
    if period.unit in (Unit.minutes, Unit.hours, Unit.days):
        return at - (add_period(at, period) - at)
    months = period.value * (12 if period.unit is Unit.years else 1)
    # add_months(t, n) lies within a few days of t + n months: search a bracket around it.
    lo = add_months(at, -months) - timedelta(days=5)
    hi = add_months(at, -months) + timedelta(days=5)
    while add_months(lo, months) > at:  # never taken in practice; keeps the invariants honest
        lo -= timedelta(days=5)
    while add_months(hi, months) <= at:
        hi += timedelta(days=5)
    span = (hi - lo) // _MICRO
    first, last = 0, span  # invariant: f(lo + first) <= at < f(lo + span); answer in [first, last]
    while first < last:
        mid = (first + last + 1) // 2
        if add_months(lo + mid * _MICRO, months) <= at:
            first = mid
        else:
            last = mid - 1
    return lo + first * _MICRO


def is_expired(expiry: datetime | None, now: datetime) -> bool:
    """A token is expired from its expiry instant on (the instant itself included)."""
    return expiry is not None and now >= expiry


@functools.lru_cache(maxsize=1024)
def plan_period(value: int | None, unit: str | None) -> Period | None:
    """A plan's period from its two columns (a `Period` is immutable: one per pair, made once;
    a listing of a hundred tokens asks a hundred times)."""
    if value is None or unit is None:
        return None
    return Period(value, Unit(unit))


@dataclass(frozen=True, slots=True)
class PreviewCounts:
    expire_immediately: int = 0
    expire_within_7_days: int = 0
    expire_later: int = 0
    never_expire: int = 0


NOTICE_WINDOW = timedelta(days=7)


def preview_bucket(expiry: datetime | None, now: datetime) -> str:
    """Where one token lands under a proposed period (the preview endpoint's buckets)."""
    if expiry is None:
        return "never_expire"
    if expiry <= now:
        return "expire_immediately"
    if expiry <= now + NOTICE_WINDOW:
        return "expire_within_7_days"
    return "expire_later"


@dataclass(frozen=True, slots=True)
class Spell:
    """A period in force over [since, until) (`until` None: in force now; `since` None: from
    before anything was recorded)."""

    period: Period
    since: datetime | None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Death:
    """When and why a token stopped working for good."""

    at: datetime
    spell: Spell | None  # the period that expired it; None: its own lifetime ended
    cut_short: bool = False  # the period, when set, had already run out for this token


def cut_off(period: Period, until: datetime) -> datetime:
    """The generation times a period in force until `until` has expired for good: every token
    generated at or before the answer (rule 4). Recorded when the period is changed."""
    return latest_issue_expired_by(period, until)


def closing(period: Period | None, since: datetime | None, expired_through: datetime | None,
            now: datetime) -> tuple[datetime | None, Spell | None]:
    """Rule 4 when a plan's period (`period`, in force since `since`) is changed or removed at
    `now`: the plan's new `expired_through` (the outgoing period's `cut_off` joins it) and the
    spell that ends (None when there was no period). Constant time, whatever the tokens."""
    if period is None:
        return expired_through, None
    killed = cut_off(period, now)
    if expired_through is not None and expired_through > killed:
        killed = expired_through
    return killed, Spell(period, since, now)


def killed_by_earlier_periods(issued_at: datetime, expired_through: datetime | None) -> bool:
    """Rule 4, in constant time: expired under a period no longer in force."""
    return expired_through is not None and issued_at <= expired_through


def death(issued_at: datetime, intrinsic_expiry: datetime | None, spells: list[Spell],
          now: datetime) -> Death | None:
    """The first instant at or before `now` when the token was expired (None: it is not):
    its own lifetime's end, or the first spell under which its period ran out. A period set
    when it had already run out for the token killed it at that instant (`cut_short`). Agrees
    with the check (`killed_by_earlier_periods`, and the period in force) by construction: a
    closed spell kills exactly the tokens at or before its `cut_off`."""
    found = None
    for spell in sorted(spells, key=lambda s: s.since or datetime.min.replace(tzinfo=UTC)):
        if spell.until is not None and spell.until <= issued_at:
            continue  # over before the token existed
        by_period = add_period(issued_at, spell.period)
        if by_period <= (spell.until or now):
            since = spell.since or by_period
            found = Death(max(by_period, since), spell, cut_short=by_period < since)
            break
    if intrinsic_expiry is not None and intrinsic_expiry <= now \
            and (found is None or intrinsic_expiry < found.at):
        return Death(intrinsic_expiry, None)
    return found
