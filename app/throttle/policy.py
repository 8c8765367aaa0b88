"""The throttling rules as pure functions of a key's state, a limit and the time."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Limit:
    """`failures` failed attempts within `window` block the key for `first_block`; each block
    that follows while the guessing goes on lasts twice the one before, at most
    `longest_block`. A key left alone for `longest_block` after its last block starts over."""

    failures: int
    window: timedelta
    first_block: timedelta
    longest_block: timedelta


class Guarded(StrEnum):
    """What is guessed, and by which key it is counted."""

    password_account = "password-account"  # one account's password, from anywhere
    password_source = "password-source"  # any account's password, from one address
    secret_client = "secret-client"  # one client's secret, from anywhere
    secret_source = "secret-source"  # any client's secret, from one address


# Per account or client: loose enough that an attacker guessing from elsewhere costs the owner
# a short wait at most, and never more than `longest_block`. Per source address: what a guesser
# meets first.
LIMITS: dict[Guarded, Limit] = {
    Guarded.password_account: Limit(10, timedelta(minutes=15), timedelta(seconds=30),
                                    timedelta(minutes=15)),
    Guarded.password_source: Limit(20, timedelta(minutes=15), timedelta(seconds=30),
                                   timedelta(minutes=15)),
    Guarded.secret_client: Limit(20, timedelta(minutes=5), timedelta(seconds=10),
                                 timedelta(minutes=5)),
    Guarded.secret_source: Limit(50, timedelta(minutes=5), timedelta(seconds=10),
                                 timedelta(minutes=5)),
}


@dataclass(frozen=True, slots=True)
class State:
    failures: int = 0
    window_start: datetime | None = None
    strikes: int = 0  # blocks in a row
    blocked_until: datetime | None = None


def retry_after(state: State, now: datetime) -> int | None:
    """Whole seconds until the key may try again; None: it may now."""
    if state.blocked_until is None or now >= state.blocked_until:
        return None
    return max(1, math.ceil((state.blocked_until - now).total_seconds()))


def after_failure(state: State, limit: Limit, now: datetime) -> State:
    """The state once one more attempt failed at `now`."""
    last = state.blocked_until or state.window_start
    if last is not None and now - last > limit.longest_block:
        state = State()  # left alone long enough: forgiven
    if state.window_start is None or now - state.window_start > limit.window:
        state = replace(state, failures=0, window_start=now)
    state = replace(state, failures=state.failures + 1)
    if state.failures < limit.failures:
        return state
    strikes = state.strikes + 1
    block = min(limit.first_block * 2 ** min(strikes - 1, 30), limit.longest_block)
    return State(failures=0, window_start=now, strikes=strikes, blocked_until=now + block)
