"""Group commit and batched lookups: the token statements of concurrent requests share one
round trip.

On the token endpoint's hot paths, once the client and the plan's facts come from the token cache
(`app/tokens/cache.py`), what is left per request is a lookup of the presented refresh token and
the write of the new rows (with the rotation of the old refresh token). Each of those costs a
pool checkout, a statement execution and, for a write, a commit; under load that is the same work
repeated per request (bench/RESULTS.md). Here a request queues its part and waits; one flush does
the part of every request queued meanwhile in one statement (one transaction for a write) and
wakes each waiter with its own outcome.

- `TokenReader.find(digest)`: the check facts of a token, read for many digests at once.
- `TokenWriter.write(rows, rotate=...)`: inserts the rows, and first marks the refresh token
  `rotate` used (only if it still is unused: a concurrent exchange of the same token loses).
  A batch commits all its writes or none, and a request is answered only after its rows are
  committed, so no token reaches a client unstored; a failed batch fails each of its requests
  with the error (nothing is retried, nothing is half written).

Batches form by themselves: while a flush is in flight, requests arriving meanwhile wait for the
next one. Under no load a batch is one request's work, done one event-loop iteration later.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import case, literal, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.tokens import cache, repository
from app.tokens.cache import Keys
from app.tokens.models import Token
from app.tokens.repository import StoredToken
from app.tokens.service import insert_rows

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Batcher(Generic[Item, Result]):
    """Queue items, run them in batches of at most `batch_size`, at most `flushes` at a time."""

    batch_size = 100
    # One flush at a time: under load the requests arriving meanwhile make the next batch, and
    # fewer, larger batches cost less CPU per request (bench/NOTES.md: 2 flushes at once gave
    # batches of 14-18 under wrk at 64 connections, and lower throughput).
    flushes = 1

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flushing = 0

    async def _submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Result] = loop.create_future()
        self._queue.append((item, done))
        if self._flushing < self.flushes:
            self._flushing += 1
            loop.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0)  # let the requests of this loop iteration join the batch
            while self._queue:
                batch = self._queue[:self.batch_size]
                del self._queue[:self.batch_size]
                try:
                    results = await self._run([item for item, _done in batch])
                except BaseException as exc:  # every waiter learns its batch failed
                    for _item, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_item, done), result in zip(batch, results, strict=True):
                    if not done.done():
                        done.set_result(result)
        finally:
            self._flushing -= 1

    async def _run(self, items: list[Item]) -> Sequence[Result]:
        raise NotImplementedError


class TokenReader(_Batcher[str, StoredToken | None]):
    """Batched `repository.find_by_digest`, on autocommit connections (one SELECT is consistent
    on its own)."""

    batch_size = 200

    async def find(self, digest: str) -> StoredToken | None:
        return await self._submit(digest)

    async def _run(self, items: list[str]) -> list[StoredToken | None]:
        async with cache.autocommit(self.engine).connect() as conn:
            found = await repository.find_by_digests(conn, list(dict.fromkeys(items)))
        return [found.get(digest) for digest in items]


@dataclass(frozen=True, slots=True)
class Write:
    rows: list[dict[str, Any]]  # from tokens.service.new_row
    rotate: uuid.UUID | None = None  # a refresh token to mark used at `at`
    at: datetime | None = None


@functools.cache
def _insert_sql(columns: tuple[str, ...]) -> str:
    """The INSERT of token rows in the driver's own terms (PostgreSQL, asyncpg): the rows are
    passed as tuples, so no per-row parameter processing runs in SQLAlchemy."""
    unknown = set(columns) - set(Token.__table__.c.keys())
    if unknown:  # the names come from `new_row`; never from a request
        raise ValueError(f"not columns of tokens: {sorted(unknown)}")
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    return f"INSERT INTO tokens ({', '.join(columns)}) VALUES ({placeholders})"  # noqa: S608


# Marks the given refresh tokens used at their own times, those still unused only.
_ROTATE_SQL = (
    "UPDATE tokens SET used_at = v.at "
    "FROM unnest($1::uuid[], $2::timestamptz[]) AS v(id, at) "
    "WHERE tokens.id = v.id AND tokens.used_at IS NULL "
    "RETURNING tokens.id")


class TokenWriter(_Batcher[Write, bool]):
    # A batch's rotations are announced in one NOTIFY, whose payload holds this many ids.
    batch_size = cache.MAX_IDS_IN_PAYLOAD

    async def write(self, rows: list[dict[str, Any]], *, rotate: uuid.UUID | None = None,
                    at: datetime | None = None) -> bool:
        """Insert `rows` once committed; False (and nothing written) if `rotate` was given and
        that refresh token was already used."""
        return await self._submit(Write(rows, rotate, at))

    async def _run(self, items: list[Write]) -> list[bool]:
        # The same token twice in one batch: the first exchange may win, the others lose.
        ok, rotations = [], {}
        for w in items:
            ok.append(w.rotate is None or w.rotate not in rotations)
            if w.rotate is not None:
                rotations.setdefault(w.rotate, w.at)
        postgres = self.engine.dialect.name == "postgresql"
        if not rotations and postgres:
            # Only inserts: one executemany is atomic on its own on PostgreSQL (asyncpg), so it
            # needs no BEGIN and COMMIT round trips.
            async with cache.autocommit(self.engine).connect() as conn:
                await self._insert(conn, [row for w in items for row in w.rows], postgres)
            return ok
        keys = Keys(frozenset(rotations))
        cache.evict_here(keys)  # as `cache.changed`: now, and again after the commit
        async with self.engine.begin() as conn:
            rotated = await self._rotate(conn, rotations, postgres) if rotations else set()
            if rotated:
                await cache.announce(conn, Keys(frozenset(rotated)))
            ok = [fine and (w.rotate is None or w.rotate in rotated)
                  for w, fine in zip(items, ok, strict=True)]
            rows = [row for w, fine in zip(items, ok, strict=True) if fine for row in w.rows]
            if rows:
                await self._insert(conn, rows, postgres)
        cache.evict_here(keys)
        return ok

    @staticmethod
    async def _insert(conn: AsyncConnection, rows: list[dict[str, Any]], postgres: bool) -> None:
        if not postgres:
            await insert_rows(conn, rows)
            return
        columns = tuple(rows[0])
        await conn.exec_driver_sql(_insert_sql(columns),
                                   [tuple(row[c] for c in columns) for row in rows])

    @staticmethod
    async def _rotate(conn: AsyncConnection, rotations: dict[uuid.UUID, datetime | None],
                      postgres: bool) -> set[uuid.UUID]:
        if postgres:
            result = await conn.exec_driver_sql(
                _ROTATE_SQL, (list(rotations), list(rotations.values())))
            return {uuid.UUID(bytes=row[0].bytes) for row in result}
        table = Token.__table__
        result = await conn.execute(
            update(table).where(table.c.id.in_(list(rotations)), table.c.used_at.is_(None))
            .values(used_at=case(
                {token_id: literal(at, table.c.used_at.type)
                 for token_id, at in rotations.items()}, value=table.c.id))
            .returning(table.c.id))
        return set(result.scalars())


@dataclass(frozen=True, slots=True)
class Batches:
    """The batched lookups and writes of one engine (one per application)."""

    reader: TokenReader
    writer: TokenWriter

    @classmethod
    def for_engine(cls, engine: AsyncEngine) -> Batches:
        return cls(TokenReader(engine), TokenWriter(engine))
