"""The throttling rules (rule 12), pure: a block after the allowed failures, doubling while the
guessing goes on, never longer than the limit's longest, forgiven once left alone."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.throttle.hashing import Busy, HashingSlots
from app.throttle.policy import LIMITS, Guarded, Limit, State, after_failure, retry_after

T0 = datetime(2026, 3, 1, tzinfo=UTC)
LIMIT = Limit(3, timedelta(minutes=5), timedelta(seconds=10), timedelta(minutes=2))


def fail(state: State, times: int, at: datetime, limit: Limit = LIMIT) -> State:
    for _ in range(times):
        state = after_failure(state, limit, at)
    return state


def test_a_block_after_the_allowed_failures_and_it_ends() -> None:
    state = fail(State(), 2, T0)
    assert retry_after(state, T0) is None
    state = fail(state, 1, T0)
    assert retry_after(state, T0) == 10
    assert retry_after(state, T0 + timedelta(seconds=9.5)) == 1  # rounded up
    assert retry_after(state, T0 + timedelta(seconds=10)) is None


def test_blocks_double_while_guessing_goes_on_and_stop_at_the_longest() -> None:
    state, at, blocks = State(), T0, []
    for _ in range(8):
        state = fail(state, 3, at)
        blocks.append(retry_after(state, at))
        at = state.blocked_until  # the guesser tries again the moment the block ends
    assert blocks == [10, 20, 40, 80, 120, 120, 120, 120]


def test_a_key_left_alone_is_forgiven() -> None:
    state = fail(fail(State(), 3, T0), 3, T0 + timedelta(seconds=10))
    assert state.strikes == 2
    later = state.blocked_until + LIMIT.longest_block + timedelta(seconds=1)
    state = fail(state, 3, later)
    assert state.strikes == 1 and retry_after(state, later) == 10


def test_failures_outside_the_window_do_not_add_up() -> None:
    state = fail(State(), 2, T0)
    state = fail(state, 2, T0 + LIMIT.window + timedelta(seconds=1))
    assert retry_after(state, T0 + LIMIT.window + timedelta(seconds=1)) is None


@given(st.sampled_from(list(Guarded)), st.lists(st.integers(0, 3600), max_size=200))
def test_no_attacker_locks_anyone_out_for_longer_than_the_longest_block(guarded, gaps) -> None:
    limit, state, at = LIMITS[guarded], State(), T0
    for gap in gaps:
        at += timedelta(seconds=gap)
        state = after_failure(state, limit, at)
        wait = retry_after(state, at)
        assert wait is None or wait <= limit.longest_block.total_seconds()


async def test_password_checks_run_one_at_a_time_and_a_flood_is_refused() -> None:
    slots = HashingSlots(concurrency=1, queue=2)
    running, most = 0, 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    results = await asyncio.gather(*[slots.run(work) for _ in range(5)],
                                   return_exceptions=True)
    assert most == 1
    assert sum(isinstance(r, Busy) for r in results) == 2  # one runs, two wait, two refused
    await slots.run(work)  # and it serves again afterwards


@pytest.mark.parametrize("guarded", list(Guarded))
def test_every_guarded_secret_has_a_limit(guarded) -> None:
    assert LIMITS[guarded].failures >= 5


async def test_a_slot_rests_so_checks_keep_to_their_share_of_a_core() -> None:
    slots = HashingSlots(concurrency=1, queue=8, share=0.5)
    starts: list[float] = []

    def work() -> None:
        starts.append(time.monotonic())
        time.sleep(0.2)

    first = time.monotonic()
    await slots.run(work)
    # The caller is answered when the check is done (0.2 s), not after the slot's rest (0.4 s):
    # the bound sits between the two, far enough from both for a loaded machine's delays.
    assert time.monotonic() - first < 0.3
    await slots.run(work)  # waits for the slot's rest: as long again as the check took
    assert starts[1] - starts[0] >= 0.39
