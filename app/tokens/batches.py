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
- `TokenRevoker.revoke(stored, ...)`: revokes a token (a refresh token with its grant), with
  its audit event and its NOTIFY, for RFC 7009 revocation.
- `TokenWriter.write(rows, rotate=...)`: inserts the rows, and first marks the refresh token
  `rotate` used (only if it still is unused: a concurrent exchange of the same token loses).
  A batch commits all its writes or none, and a request is answered only after its rows are
  committed, so no token reaches a client unstored; a failed batch fails each of its requests
  with the error (nothing is half written).

A batch the database aborted for the sake of a concurrent transaction (a deadlock, a
serialization failure: it wrote nothing) runs again, up to `Batcher.attempts` times in all. A
batch that failed on one item's data (a row whose plan is gone, a value a column refuses: it
wrote nothing either) runs again in halves, halved again while they fail so, so only that
item's request fails. Any other failure, a lost database say, is the answer of every request
of the batch at once.

Batches form by themselves: while a flush is in flight, requests arriving meanwhile wait for the
next one. Under no load a batch is one request's work, done one event-loop iteration later.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson
from sqlalchemy import case, insert, literal, or_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import db
from app.audit import service as audit
from app.audit.models import AuditEvent
from app.ops import metrics
from app.tokens import cache, repository
from app.tokens.cache import Keys
from app.tokens.models import Token
from app.tokens.repository import StoredToken
from app.tokens.rules import TokenKind
from app.tokens.service import insert_rows

log = logging.getLogger("tessera.batches")


@dataclass(frozen=True, slots=True)
class _Failed:
    """The outcome of an item that failed on its own, in a batch whose other items did not."""

    error: Exception


Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """Queue items, run them in batches of at most `batch_size`, at most `flushes` at a time.
    A subclass says how one batch runs (`_run`: one result per item, in order)."""

    batch_size = 100
    # One flush at a time: under load the requests arriving meanwhile make the next batch, and
    # fewer, larger batches cost less CPU per request (bench/NOTES.md: 2 flushes at once gave
    # batches of 14-18 under wrk at 64 connections, and lower throughput).
    flushes = 1
    # Runs of one batch when the database aborts it for a concurrent transaction.
    attempts = 3

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
        # This task's first step runs after every callback of the loop iteration that made it,
        # so the requests of that iteration are queued by then: waiting an iteration more would
        # only add latency (bench/NOTES.md).
        try:
            while self._queue:
                batch = self._queue[:self.batch_size]
                del self._queue[:self.batch_size]
                try:
                    outcomes = await self._attempt([item for item, _done in batch])
                except BaseException as exc:  # every waiter learns its batch failed
                    if db.unresponsive(exc):
                        # The server stopped answering: the requests queued meanwhile would
                        # only wait one more timeout for the same answer (fail closed now).
                        batch += self._queue
                        self._queue = []
                    for _item, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_item, done), outcome in zip(batch, outcomes, strict=True):
                    if done.done():
                        continue
                    if isinstance(outcome, _Failed):
                        done.set_exception(outcome.error)
                    else:
                        done.set_result(outcome)
        finally:
            self._flushing -= 1

    async def _attempt(self, items: list[Item]) -> Sequence[Result | _Failed]:
        metrics.batch_size(type(self).__name__, len(items))
        return await self._attempts(items)

    async def _attempts(self, items: list[Item]) -> Sequence[Result | _Failed]:
        """`_run`, again when the database aborted it for a concurrent transaction, and item by
        item when one item's data failed it: a failed run committed nothing (each run is one
        statement or one transaction)."""
        for attempt in range(1, self.attempts + 1):
            try:
                return await self._run(items)
            except Exception as exc:
                if db.is_concurrency_abort(exc) and attempt < self.attempts:
                    metrics.batch_retries.inc(type(self).__name__, "concurrency")
                    log.warning("%s batch of %d aborted by the database (%s); running it again",
                                type(self).__name__, len(items), exc.orig.sqlstate)
                    continue
                if len(items) > 1 and db.is_data_error(exc):
                    metrics.batch_retries.inc(type(self).__name__, "data")
                    log.warning("%s batch of %d failed on its data (%s); running it again in "
                                "halves", type(self).__name__, len(items), type(exc).__name__)
                    half = len(items) // 2
                    return [*await self._part(items[:half]), *await self._part(items[half:])]
                raise
        raise AssertionError("unreachable")

    async def _part(self, items: list[Item]) -> Sequence[Result | _Failed]:
        """Part of a batch that failed on one item's data, run on its own, halved again while
        it fails so: k bad items among n cost about k·log2(n) statements more, and only their
        requests fail. The parts run in queue order (the first of two exchanges of one refresh
        token still wins)."""
        try:
            return await self._attempt(items)
        except Exception as exc:  # noqa: BLE001 - these items' answer, not their neighbours'
            return [_Failed(exc)] * len(items)

    async def _run(self, items: list[Item]) -> Sequence[Result]:
        raise NotImplementedError


class Lookup(Batcher[str, Any]):
    """Rows by key (`find(key)`, None when there is none), read for the keys of concurrent
    requests at once: one `read(connection, keys)` per batch, on an autocommit connection
    (one SELECT is consistent on its own)."""

    batch_size = 200

    @staticmethod
    async def read(conn: AsyncConnection, keys: list[str]) -> dict[str, Any]:
        raise NotImplementedError

    async def find(self, key: str) -> Any:  # noqa: ANN401 - the subclass's row
        return await self._submit(key)

    async def _run(self, items: list[str]) -> list[Any]:
        async with db.connection(cache.autocommit(self.engine)) as conn:
            found = await self.read(conn, list(dict.fromkeys(items)))
        return [found.get(key) for key in items]


class TokenReader(Lookup):
    """Batched `repository.find_by_digest`: a token's check facts by the digest of its
    secret (`StoredToken`)."""

    read = staticmethod(repository.find_by_digests)


@dataclass(frozen=True, slots=True)
class Write:
    rows: list[dict[str, Any]]  # from tokens.service.new_row
    rotate: uuid.UUID | None = None  # a refresh token to mark used at `at`
    at: datetime | None = None
    events: list[dict[str, Any]] | tuple = ()  # audit events (`audit.row`), written with rows


def _names(columns: tuple[str, ...]) -> str:
    unknown = set(columns) - set(Token.__table__.c.keys())
    if unknown:  # the names come from `new_row`; never from a request
        raise ValueError(f"not columns of tokens: {sorted(unknown)}")
    return ", ".join(columns)


# On PostgreSQL a batch's rows travel as one JSON array (text), which the server turns into
# rows of the tokens table (`json_populate_record`: each value cast to its column's type). One
# parameter, encoded by orjson, instead of an array per column: asyncpg's array encoder checks
# every element against abstract base classes, which cost ~7 % of a refresh's CPU under wrk
# (py-spy, bench/NOTES.md).
def _json(value: object) -> str:
    return orjson.dumps(value, default=_uuid_text).decode()


def _uuid_text(value: object) -> str:
    """orjson writes `uuid.UUID` itself; ids read by asyncpg are its own subclass."""
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


_EVENT_COLUMNS = "id, occurred_at, actor, action, plan_id, target_type, target_id, detail"


# By key: the rows a batch updates (rotation, revocation) are found by their primary key, as
# `tokens.id = ANY(ARRAY(<the batch's ids>))`, which PostgreSQL walks the primary key for,
# whatever it believes of the table. Joined only to the batch's values, the UPDATE was planned
# from the statistics of `used_at IS NULL AND revoked_at IS NULL`, and a stale estimate of one
# such row gave a sequential scan of the whole table joined in a loop to the batch (43 ms for
# 32 rotations of 8,800 tokens, growing with the table; bench/NOTES.md).


@functools.cache
def _insert_sql(columns: tuple[str, ...]) -> str:
    """One statement for any number of token rows ($1: JSON array of row objects) and their
    audit events ($2: JSON array of audit_events rows), not one per row as an executemany would
    run."""
    names = _names(columns)
    return ("WITH inserted AS ("  # noqa: S608
            f" INSERT INTO tokens ({names})"
            f" SELECT {names} FROM json_populate_recordset(NULL::tokens, $1::text::json)"
            " RETURNING 1)"
            f" INSERT INTO audit_events ({_EVENT_COLUMNS})"
            f" SELECT {_EVENT_COLUMNS}"
            " FROM json_populate_recordset(NULL::audit_events, $2::text::json)")


@functools.cache
def _rotate_sql(columns: tuple[str, ...]) -> str:
    """A batch with rotations in one statement (one round trip, its own transaction on an
    autocommit connection), on PostgreSQL:

    - `rotated`: the refresh tokens of $1 (JSON array of `{"id", "at"}`) marked used at their
      own times, those still unused and unrevoked only (a concurrent exchange elsewhere that
      marked one first wins; a revocation that committed meanwhile leaves nothing to rotate);
    - `inserted`: the new rows of $2 (JSON array of row objects, each with the token its
      request rotates, or null, as `rotates`) whose own rotation took place; the others are
      dropped; `audited`: their audit events ($4, the same way);
    - the NOTIFY of the rotated ids and of their plans, up to 20 (`l`: only those plans' kept
      listings go; past 20 every listing), ($3: the channel) to the other replicas
      (`cache.Keys` payload), sent only if any was rotated and delivered only if the
      statement commits.

    It answers the rotated ids. All parts see one snapshot; the UPDATE takes the row locks, so a
    concurrent rotation of the same token waits and then finds it used."""
    names = _names(columns)
    return (
        "WITH rotating AS MATERIALIZED ("  # noqa: S608  # names from `new_row`, checked
        " SELECT * FROM json_to_recordset($1::text::json) AS v(id uuid, at timestamptz)),"
        " rotated AS ("
        " UPDATE tokens SET used_at = v.at FROM rotating AS v"
        " WHERE tokens.id = ANY(ARRAY(SELECT id FROM rotating)) AND tokens.id = v.id"  # by key
        " AND tokens.used_at IS NULL AND tokens.revoked_at IS NULL"
        " RETURNING tokens.id, tokens.plan_id),"
        " fresh AS ("
        " SELECT (e.j ->> 'rotates')::uuid AS rotates, t.*"
        " FROM json_array_elements($2::text::json) AS e(j),"
        " LATERAL json_populate_record(NULL::tokens, e.j) AS t),"
        " inserted AS ("
        f" INSERT INTO tokens ({names})"
        f" SELECT {names} FROM fresh"
        " WHERE fresh.rotates IS NULL OR fresh.rotates IN (SELECT id FROM rotated)"
        " RETURNING 1),"
        " audited AS ("
        f" INSERT INTO audit_events ({_EVENT_COLUMNS})"
        f" SELECT {_EVENT_COLUMNS} FROM ("
        " SELECT (e.j ->> 'rotates')::uuid AS rotates, a.*"
        " FROM json_array_elements($4::text::json) AS e(j),"
        " LATERAL json_populate_record(NULL::audit_events, e.j) AS a) AS f"
        " WHERE f.rotates IS NULL OR f.rotates IN (SELECT id FROM rotated)"
        " RETURNING 1)"
        " SELECT array(SELECT id FROM rotated),"
        " (SELECT pg_notify($3, json_build_object('t', json_agg(id::text),"
        "  'l', CASE WHEN count(DISTINCT plan_id) <= 20 THEN json_agg(DISTINCT plan_id::text)"
        "  END)::text)"
        "  FROM rotated HAVING count(*) > 0),"
        " (SELECT count(*) FROM inserted)")


def _rotated(items: list[Write], ids: Iterable[uuid.UUID]) -> Keys:
    """The change of rotating the refresh tokens `ids`: the tokens, and the plans they are in
    (those of the rows that replace them), so that only those plans' listings go."""
    ids = frozenset(ids)
    replacing = [w for w in items if w.rotate in ids]
    known = all(w.rows for w in replacing)
    return Keys(ids, listed=frozenset(row["plan_id"] for w in replacing for row in w.rows)
                if known else frozenset())


def _listing(writes: list[Write]) -> dict[str, Any]:
    """The execution options naming the plans of the writes' rows (`cache.listing`)."""
    return cache.listing([*(row for w in writes for row in w.rows),
                          *(event for w in writes for event in w.events)])


class TokenWriter(Batcher[Write, bool]):
    # A batch's rotations are announced in one NOTIFY, whose payload holds this many ids.
    batch_size = cache.MAX_IDS_IN_PAYLOAD

    async def write(self, rows: list[dict[str, Any]], *, rotate: uuid.UUID | None = None,
                    at: datetime | None = None,
                    events: list[dict[str, Any]] | tuple = ()) -> bool:
        """Insert `rows` and their audit `events` once committed; False (and nothing written)
        if `rotate` was given and that refresh token was already used."""
        return await self._submit(Write(rows, rotate, at, events))

    async def _run(self, items: list[Write]) -> list[bool]:
        # The same token twice in one batch: the first exchange may win, the others lose.
        ok, rotations = [], {}
        for w in items:
            ok.append(w.rotate is None or w.rotate not in rotations)
            if w.rotate is not None:
                rotations.setdefault(w.rotate, w.at)
        if self.engine.dialect.name == "postgresql":
            rotated = await self._run_postgresql(items, ok, rotations)
        else:
            rotated = await self._run_portable(items, ok, rotations)
        return [fine and (w.rotate is None or w.rotate in rotated)
                for w, fine in zip(items, ok, strict=True)]

    async def _run_postgresql(self, items: list[Write], ok: list[bool],
                              rotations: dict[uuid.UUID, datetime | None]) -> set[uuid.UUID]:
        """The whole batch as one statement on an autocommit connection: one round trip, and
        one transaction (a single statement is atomic)."""
        writes = [w for w, fine in zip(items, ok, strict=True) if fine and w.rows]
        if not writes and not rotations:
            return set()
        columns = tuple(writes[0].rows[0]) if writes else ("id",)
        engine = cache.autocommit(self.engine)
        if not rotations:
            rows = _json([row for w in writes for row in w.rows])
            events = _json([event for w in writes for event in w.events])
            async with db.connection(engine) as conn:
                await conn.exec_driver_sql(_insert_sql(columns), (rows, events),
                                           execution_options=_listing(writes))
            return set()
        rows = _json([{**row, "rotates": w.rotate} for w in writes for row in w.rows])
        events = _json([{**event, "rotates": w.rotate} for w in writes for event in w.events])
        # In id order, as a grant's revocation locks its rows: two batches never wait on each
        # other's locks in opposite orders.
        rotate = _json([{"id": i, "at": at} for i, at in sorted(rotations.items())])
        keys = _rotated(items, rotations)
        cache.evict_here(keys)  # as `cache.changed`: now, and again after the commit
        try:
            async with db.connection(engine) as conn:
                result = await conn.exec_driver_sql(
                    _rotate_sql(columns), (rotate, rows, cache.CHANNEL, events),
                    execution_options=_listing(writes))
                ids = result.scalar_one()
        finally:
            cache.evict_here(keys)
        return {uuid.UUID(bytes=i.bytes) for i in ids}

    async def _run_portable(self, items: list[Write], ok: list[bool],
                            rotations: dict[uuid.UUID, datetime | None]) -> set[uuid.UUID]:
        """Core statements in one transaction (SQLite: no arrays, and no NOTIFY to send)."""
        keys = _rotated(items, rotations)
        if rotations:
            cache.evict_here(keys)
        async with db.connection(self.engine, begin=True) as conn:
            rotated = await self._rotate(conn, rotations) if rotations else set()
            if rotated:
                await cache.announce(conn, _rotated(items, rotated))
            done = [w for w, fine in zip(items, ok, strict=True)
                    if fine and (w.rotate is None or w.rotate in rotated)]
            rows = [row for w in done for row in w.rows]
            if rows:
                await insert_rows(conn, rows, [event for w in done for event in w.events])
        if rotations:
            cache.evict_here(keys)
        return rotated

    @staticmethod
    async def _rotate(conn: AsyncConnection,
                      rotations: dict[uuid.UUID, datetime | None]) -> set[uuid.UUID]:
        table = Token.__table__
        result = await conn.execute(
            update(table).where(table.c.id.in_(list(rotations)), table.c.used_at.is_(None),
                                table.c.revoked_at.is_(None))
            .values(used_at=case(
                {token_id: literal(at, table.c.used_at.type)
                 for token_id, at in rotations.items()}, value=table.c.id))
            .returning(table.c.id))
        return set(result.scalars())


@dataclass(frozen=True, slots=True)
class Revocation:
    stored: StoredToken
    actor: str
    reason: str
    at: datetime
    action: str = "token.revoked"  # the audit event's (`token.replayed` for a reuse)

    @property
    def keys(self) -> Keys:
        """What it changes: the token, and for a refresh token its whole grant (RFC 7009 §2.1)."""
        family = self.stored.family_id if self.stored.kind == TokenKind.refresh else None
        return Keys(frozenset({self.stored.id}), family_id=family,
                    listed=frozenset({self.stored.plan_id}))


# On PostgreSQL, a batch of revocations in one statement (one round trip, atomic on its own):
# $1 the revocations (JSON array of {"id", "family_id", "at", "reason", "actor"}), $2 their
# audit events (JSON array of audit_events rows), $3 the channel, $4 the NOTIFY payloads.
# A token named twice (the same one, or one inside a grant revoked too) is revoked once, by the
# earliest revocation; tokens revoked before keep their first revocation.
_REVOKE_SQL = (
    "WITH v AS ("
    " SELECT * FROM json_to_recordset($1::text::json)"
    " AS v(id uuid, family_id uuid, at timestamptz, reason text, actor text)),"
    " doomed AS ("
    " SELECT v.id AS target, v.at, v.reason, v.actor FROM v"
    " UNION ALL"
    " SELECT t.id, v.at, v.reason, v.actor FROM v JOIN tokens t ON t.family_id = v.family_id"
    # The grants' tokens by the family index, as "by key" above says for the primary key.
    " WHERE t.family_id = ANY(ARRAY(SELECT family_id FROM v WHERE family_id IS NOT NULL))),"
    " chosen AS MATERIALIZED (SELECT DISTINCT ON (target) * FROM doomed ORDER BY target, at),"
    " revoked AS ("  # the rows by their primary key ("by key" above)
    " UPDATE tokens SET revoked_at = d.at, revoked_reason = d.reason, revoked_by = d.actor"
    " FROM chosen AS d"
    " WHERE tokens.id = ANY(ARRAY(SELECT target FROM chosen)) AND tokens.id = d.target"
    " AND tokens.revoked_at IS NULL"
    " RETURNING tokens.id),"
    " audited AS ("
    " INSERT INTO audit_events"
    " (id, occurred_at, actor, action, plan_id, target_type, target_id, detail)"
    " SELECT id, occurred_at, actor, action, plan_id, target_type, target_id, detail"
    " FROM json_populate_recordset(NULL::audit_events, $2::text::json)"
    " RETURNING 1)"
    " SELECT (SELECT count(*) FROM revoked), (SELECT count(*) FROM audited),"
    " (SELECT count(pg_notify($3, p)) FROM json_array_elements_text($4::text::json) AS p)")


_LOCK_FAMILIES_SQL = (  # the grants' tokens by the family index, as "by key" above says
    "SELECT 1 FROM tokens WHERE family_id = ANY(ARRAY("
    "SELECT value::uuid FROM json_array_elements_text($1::text::json)))"
    " ORDER BY id FOR UPDATE")


class TokenRevoker(Batcher[Revocation, None]):
    """Revocations (RFC 7009) group-committed: a request is answered once its revocation, its
    audit event and its NOTIFY are committed (a failed batch: as `Batcher` says)."""

    batch_size = 100

    async def revoke(self, stored: StoredToken, *, actor: str, reason: str,
                     at: datetime, action: str = "token.revoked") -> None:
        await self._submit(Revocation(stored, actor, reason, at, action))

    async def _run(self, items: list[Revocation]) -> list[None]:
        keys = [r.keys for r in items]
        for k in keys:  # as `cache.changed`: now, and again after the commit
            cache.evict_here(k)
        try:
            if self.engine.dialect.name == "postgresql":
                await self._run_postgresql(items, keys)
            else:
                await self._run_portable(items)
        finally:
            for k in keys:
                cache.evict_here(k)
        return [None] * len(items)

    async def _run_postgresql(self, items: list[Revocation], keys: list[Keys]) -> None:
        revocations = _json([{"id": r.stored.id, "family_id": k.family_id, "at": r.at,
                              "reason": r.reason, "actor": r.actor}
                             for r, k in zip(items, keys, strict=True)])
        audited = [_audit_row(r) for r in items]
        events, listed = _json(audited), cache.listing(audited)
        payloads = _json(sorted({k.payload() for k in keys}))
        families = [str(k.family_id) for k in keys if k.family_id is not None]
        if not families:  # single tokens: one statement, atomic on its own
            async with db.connection(cache.autocommit(self.engine)) as conn:
                await conn.exec_driver_sql(_REVOKE_SQL, (revocations, events, cache.CHANNEL,
                                                         payloads), execution_options=listed)
            return
        # A grant is revoked in two statements of one transaction. The first locks its rows,
        # in id order, waiting for a rotation in flight to commit; the second, whose snapshot
        # is taken after that, then sees the rows the rotation added and revokes them too. A
        # rotation that comes later waits on those locks and finds its token revoked.
        async with db.connection(self.engine, begin=True) as conn:
            await conn.exec_driver_sql(_LOCK_FAMILIES_SQL, (_json(sorted(set(families))),))
            await conn.exec_driver_sql(_REVOKE_SQL, (revocations, events, cache.CHANNEL,
                                                     payloads), execution_options=listed)

    async def _run_portable(self, items: list[Revocation]) -> None:
        """Core statements in one transaction (SQLite: no JSON functions relied on, no
        NOTIFY to send)."""
        table = Token.__table__
        async with db.connection(self.engine, begin=True) as conn:
            for r in sorted(items, key=lambda r: r.at):
                condition = table.c.id == r.stored.id
                if (family := r.keys.family_id) is not None:
                    condition = or_(condition, table.c.family_id == family)
                await conn.execute(
                    update(table).where(condition, table.c.revoked_at.is_(None))
                    .values(revoked_at=r.at, revoked_reason=r.reason, revoked_by=r.actor))
            await conn.execute(insert(AuditEvent.__table__), [_audit_row(r) for r in items])


def _audit_row(r: Revocation) -> dict[str, Any]:
    """The audit event `tokens.service.revoke` records, as a row."""
    family = r.keys.family_id
    return audit.row(r.actor, r.action, r.stored.plan_id, "token", r.stored.id, r.at,
                     reason=r.reason, kind=r.stored.kind, family_id=family and str(family))


@dataclass(frozen=True, slots=True)
class Batches:
    """The batched lookups and writes of one engine (one per application)."""

    reader: TokenReader
    writer: TokenWriter
    revoker: TokenRevoker

    @classmethod
    def for_engine(cls, engine: AsyncEngine) -> Batches:
        return cls(TokenReader(engine), TokenWriter(engine), TokenRevoker(engine))
