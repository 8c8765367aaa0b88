"""Password hashing under a bounded concurrency and CPU share (rule 12).

argon2id is meant to cost tens of milliseconds of CPU per check (here ~160 ms). Unbounded, a
flood of sign-in attempts runs one such check per request in threads, and every core goes to
them: the token checks of everyone else wait (measured: eight guessers raised the gateway
check's p99 from 5.6 ms to 224 ms). Here at most `concurrency` checks run at once, each slot
rests after a check so that checks take at most `share` of a core over time, and at most
`queue` sign-ins wait; past that one is refused at once as busy (503, retry). Under a flood,
sign-ins wait or are refused, and token checks go on: the attacker's flood costs sign-ins, not
the service (bench/RESULTS.md: "beside password guessers").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


class Busy(Exception):
    """Too many sign-ins wait for a password check: retry shortly."""


class Crowding(Exception):
    """One source has as many sign-ins waiting as it may: the rest wait for their turn."""


# Sign-ins one source address may have waiting or running at once: a burst from one address
# cannot take more than a quarter of the queue the others wait in (offices and carrier NAT put
# many people behind one address: a few at once are normal).
PER_SOURCE = 8


class HashingSlots:
    def __init__(self, concurrency: int = 1, queue: int = 32, share: float = 1.0) -> None:
        self.concurrency, self.queue, self.share = concurrency, queue, share
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting = 0
        self._by_source: dict[str, int] = {}

    def configure(self, concurrency: int, queue: int, share: float = 1.0) -> None:
        self.concurrency, self.queue, self.share, self._slots = concurrency, queue, share, None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:  # one per event loop
            self._slots, self._loop, self._waiting = asyncio.Semaphore(self.concurrency), loop, 0
        return self._slots

    async def run(self, work: Callable[..., T], *args: Any,  # noqa: ANN401
                  before: Callable[[], Awaitable[None]] | None = None,
                  after: Callable[[T], Awaitable[None]] | None = None,
                  source: str | None = None) -> T:
        """`work(*args)` in a thread, once a slot is free. `before` runs once the slot is
        had, and may refuse (raise): what was true when the request joined the queue (a key
        not blocked yet) may not be by its turn. `after(result)` runs while the slot is still
        held (a failure counted before the next in line checks)."""
        slots = self._semaphore()
        if slots.locked() and self._waiting >= self.queue:
            raise Busy
        if source is not None and self._by_source.get(source, 0) >= PER_SOURCE:
            raise Crowding
        if source is not None:
            self._by_source[source] = self._by_source.get(source, 0) + 1
        try:
            return await self._run(slots, work, args, before, after)
        finally:
            if source is not None:
                left = self._by_source[source] - 1
                if left:
                    self._by_source[source] = left
                else:
                    del self._by_source[source]

    async def _run(self, slots: asyncio.Semaphore, work: Callable[..., T], args: tuple,
                   before: Callable[[], Awaitable[None]] | None,
                   after: Callable[[T], Awaitable[None]] | None) -> T:
        self._waiting += 1
        try:
            await slots.acquire()
        finally:
            self._waiting -= 1
        if before is not None:
            try:
                await before()
            except BaseException:
                slots.release()
                raise
        started = time.monotonic()
        worked = None
        try:
            result = await anyio.to_thread.run_sync(work, *args)
            worked = time.monotonic() - started
            if after is not None:
                await after(result)
            return result
        finally:
            if worked is None:
                worked = time.monotonic() - started
            rest = worked * (1 / self.share - 1)
            if rest > 0:  # the slot rests, the caller has its answer now
                asyncio.get_running_loop().call_later(rest, slots.release)
            else:
                slots.release()


# The process's slots (`app.main.create_app` sizes them from the settings).
SLOTS = HashingSlots()
