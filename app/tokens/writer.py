"""Group commit for new token rows: the INSERTs of concurrent requests share one statement.

Issuing a token writes one or two rows and nothing else once the client and the plan's facts are
cached (`app/tokens/cache.py`). One INSERT per request costs a pool checkout, a statement
execution and a commit (bench/RESULTS.md); under load most of that is the same work repeated.
`TokenWriter.insert` queues the rows and waits; one flush writes every row queued meanwhile with
one executemany, atomically (all rows of the batch or none), and wakes each waiter with the
outcome. A request is answered only after its rows are committed, so no token reaches a client
unstored; a failed batch fails each of its requests with the error (nothing is retried, nothing
is half written).

Batches form by themselves: while one flush is in flight, the rows of requests arriving meanwhile
wait for the next. Under no load a batch is one request's rows, written at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app.tokens.service import insert_rows

# Flushes in flight at once: enough to keep the database busy while the next batch forms.
_FLUSHES = 2
_BATCH_ROWS = 500


class TokenWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        # On PostgreSQL one executemany is atomic on its own (asyncpg), so it needs no BEGIN and
        # COMMIT round trips; elsewhere the batch runs in a transaction.
        self._engine = engine
        self._atomic_alone = engine.dialect.name == "postgresql"
        self._queue: list[tuple[list[dict[str, Any]], asyncio.Future[None]]] = []
        self._flushing = 0

    async def insert(self, rows: list[dict[str, Any]]) -> None:
        """Insert `rows` (from `tokens.service.new_row`); returns once they are committed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((rows, done))
        if self._flushing < _FLUSHES:
            self._flushing += 1
            asyncio.get_running_loop().create_task(self._flush())
        await done

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, taken = [], 0
                while self._queue and taken < _BATCH_ROWS:
                    rows, done = self._queue.pop(0)
                    batch.append((rows, done))
                    taken += len(rows)
                await self._write(batch)
        finally:
            self._flushing -= 1

    async def _write(self, batch: list[tuple[list[dict[str, Any]], asyncio.Future[None]]]) -> None:
        rows = [row for request_rows, _done in batch for row in request_rows]
        try:
            if self._atomic_alone:
                async with self._engine.connect() as conn:
                    conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    await insert_rows(conn, rows)
            else:
                async with self._engine.begin() as conn:
                    await insert_rows(conn, rows)
        except BaseException as exc:  # every waiter learns the batch failed
            for _rows, done in batch:
                if not done.done():
                    done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for _rows, done in batch:
            if not done.done():
                done.set_result(None)
