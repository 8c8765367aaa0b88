"""Password hashing under a bounded concurrency (rule 12).

argon2id is meant to cost tens of milliseconds of CPU per check. Unbounded, a flood of sign-in
attempts runs one such check per request in threads, and every core goes to them: the token
checks of everyone else wait (measured: eight guessers raised the gateway check's p99 from
5.6 ms to 224 ms). Here at most `concurrency` checks run at once (one core of two, by default),
and at most `queue` more wait; past that a sign-in is refused at once as busy (503, retry).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


class Busy(Exception):
    """Too many sign-ins wait for a password check: retry shortly."""


class HashingSlots:
    def __init__(self, concurrency: int = 1, queue: int = 32) -> None:
        self.concurrency, self.queue = concurrency, queue
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting = 0

    def configure(self, concurrency: int, queue: int) -> None:
        self.concurrency, self.queue, self._slots = concurrency, queue, None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:  # one per event loop
            self._slots, self._loop, self._waiting = asyncio.Semaphore(self.concurrency), loop, 0
        return self._slots

    async def run(self, work: Callable[..., T], *args: Any) -> T:  # noqa: ANN401
        """`work(*args)` in a thread, once a slot is free."""
        slots = self._semaphore()
        if slots.locked() and self._waiting >= self.queue:
            raise Busy
        self._waiting += 1
        try:
            await slots.acquire()
        finally:
            self._waiting -= 1
        try:
            return await anyio.to_thread.run_sync(work, *args)
        finally:
            slots.release()


# The process's slots (`app.main.create_app` sizes them from the settings).
SLOTS = HashingSlots()
