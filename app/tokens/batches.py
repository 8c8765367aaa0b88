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
next one. Under no load a batch is one request's work, done at once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import case, literal, update
from sqlalchemy.ext.asyncio import AsyncEngine

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
    flushes = 2  # enough to keep the database busy while the next batch forms

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


class TokenWriter(_Batcher[Write, bool]):
    # A batch's rotations are announced in one NOTIFY, whose payload holds this many ids.
    batch_size = cache.MAX_IDS_IN_PAYLOAD

    async def write(self, rows: list[dict[str, Any]], *, rotate: uuid.UUID | None = None,
                    at: datetime | None = None) -> bool:
        """Insert `rows` once committed; False (and nothing written) if `rotate` was given and
        that refresh token was already used."""
        return await self._submit(Write(rows, rotate, at))

    async def _run(self, items: list[Write]) -> list[bool]:
        rotations = {w.rotate: w.at for w in items if w.rotate is not None}
        keys = Keys(frozenset(rotations)) if rotations else None
        if keys is not None:  # as `cache.changed`: evict now, and again after the commit
            cache.evict_here(keys)
        if not rotations and self.engine.dialect.name == "postgresql":
            # Only inserts: one executemany is atomic on its own on PostgreSQL (asyncpg), so it
            # needs no BEGIN and COMMIT round trips.
            async with cache.autocommit(self.engine).connect() as conn:
                await insert_rows(conn, [row for w in items for row in w.rows])
            return [True] * len(items)
        async with self.engine.begin() as conn:
            rotated: set[uuid.UUID] = set()
            if rotations:
                column = Token.__table__.c.used_at
                result = await conn.execute(
                    update(Token.__table__)
                    .where(Token.__table__.c.id.in_(list(rotations)), column.is_(None))
                    .values(used_at=case(
                        {token_id: literal(at, column.type) for token_id, at in rotations.items()},
                        value=Token.__table__.c.id))
                    .returning(Token.__table__.c.id))
                rotated = set(result.scalars())
                if rotated:
                    await cache.announce(conn, Keys(frozenset(rotated)))
            ok, claimed = [], set()
            for w in items:  # the same token twice in one batch: the first exchange wins
                ok.append(w.rotate is None or (w.rotate in rotated and w.rotate not in claimed))
                claimed.add(w.rotate)
            rows = [row for w, fine in zip(items, ok, strict=True) if fine for row in w.rows]
            if rows:
                await insert_rows(conn, rows)
        if keys is not None:
            cache.evict_here(keys)
        return ok


@dataclass(frozen=True, slots=True)
class Batches:
    """The batched lookups and writes of one engine (one per application)."""

    reader: TokenReader
    writer: TokenWriter

    @classmethod
    def for_engine(cls, engine: AsyncEngine) -> Batches:
        return cls(TokenReader(engine), TokenWriter(engine))
