"""Database plumbing: declarative base, portable column types, engine and sessions.

PostgreSQL (asyncpg) is the production store; SQLite (aiosqlite) the embedded default.
Alembic owns the schema (see `migrations/`); nothing here creates tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque, namedtuple
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, MetaData, Select, String, any_, bindparam, event, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, ORMExecuteState, Session, UOWTransaction
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util.concurrency import greenlet_spawn
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty

try:  # SQLAlchemy 2.1 (the lock); 2.0 knows it as await_only
    from sqlalchemy.util.concurrency import await_
except ImportError:  # pragma: no cover - SQLAlchemy 2.0
    from sqlalchemy.util.concurrency import await_only as await_

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend (SQLite keeps no zone, so one is put back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:  # noqa: ANN401
        """On PostgreSQL a plain function, not the decorator's chain (a tenth of a page of 100
        tokens' CPU): asyncpg reads a `timestamptz` as an aware UTC datetime, except
        `infinity` (an aware `datetime.max` written), which it reads naive."""
        if dialect.name == "postgresql":
            return _aware
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is UTC:  # asyncpg's, already
            return value
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _aware(value: datetime | None) -> datetime | None:
    return value if value is None or value.tzinfo is not None else value.replace(tzinfo=UTC)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


class FairQueue(AsyncAdaptedQueue):
    """The pool's idle connections, handed to the requests waiting for one in the order they
    began to wait.

    SQLAlchemy's asyncio queue is an `asyncio.Queue`: a connection put back wakes the first
    waiter, but any request that asks before the woken one runs takes it, and the woken one
    queues again at the back. Under a load above the pool's size the same requests lost again
    and again until the pool's timeout (503) while later ones were served. Here a connection
    put back goes to the longest waiter directly, and a request finding others waiting queues
    behind them (bench/NOTES.md, eleventh pass)."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._waiters: deque[asyncio.Future[Any]] = deque()

    def _someone_waits(self) -> bool:
        while self._waiters and self._waiters[0].done():  # gone: timed out or cancelled
            self._waiters.popleft()
        return bool(self._waiters)

    def put_nowait(self, item: Any) -> None:  # noqa: ANN401 - the pool's own record type
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return
        super().put_nowait(item)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:  # noqa: ANN401
        if not self._someone_waits():
            with contextlib.suppress(asyncio.QueueEmpty):
                return self._queue.get_nowait()
        if not block:
            raise Empty
        return await_(self._wait(seconds=timeout))

    async def _wait(self, *, seconds: float | None) -> Any:  # noqa: ANN401
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(seconds):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # Handed a connection just as the wait ended (timeout, cancellation): pass it
                # on, so that no connection leaves the pool with nobody holding it.
                self.put_nowait(waiter.result())
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise Empty from None
            raise


class FairQueuePool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio pool with `FairQueue`: first come, first served."""

    _queue_class = FairQueue


def make_engine(url: str, *, pool_size: int = 20, pool_timeout: float = 30,
                statement_timeout: float | None = None, connect_timeout: float | None = None,
                **kwargs: Any) -> AsyncEngine:
    """An engine for `url`. On PostgreSQL, `statement_timeout` bounds each statement twice: on
    the server (a slow statement is cancelled, SQLSTATE 57014) and in the driver (a server
    that does not answer at all, as a frozen one does: TimeoutError); `connect_timeout` bounds
    opening a connection. Both are answered 503 (`app.api.errors`)."""
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":  # the embedded default's folder, on first use
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    connect_args: dict[str, Any] = {}
    if connect_timeout is not None:
        connect_args["timeout"] = connect_timeout
    if statement_timeout is not None:
        connect_args["command_timeout"] = statement_timeout
        connect_args["server_settings"] = {
            "statement_timeout": str(max(1, int(statement_timeout * 1000)))}
    kwargs.setdefault("poolclass", FairQueuePool)
    return create_async_engine(
        url,
        connect_args=connect_args,
        # A fixed pool, no overflow: under a sustained load above the pool's size, overflow
        # connections were opened and closed request after request (a PostgreSQL backend
        # started each time), which halved personal token creation (bench/NOTES.md). A request
        # beyond the pool waits for a connection, and a wait past the pool's timeout is a 503.
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=pool_timeout,
        pool_pre_ping=False,
        # Statements are cached per connection; a reconnect after an outage starts clean.
        **kwargs,
    )


# SQLSTATEs of a transaction PostgreSQL aborted for the sake of a concurrent one: nothing of it
# was committed, and the same work run again may succeed (40001 serialization_failure, 40P01
# deadlock_detected).
_CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})


def is_concurrency_abort(exc: BaseException) -> bool:
    """True when the database aborted the transaction because of a concurrent one (a deadlock
    or a serialization failure): it wrote nothing and may be run again."""
    return (isinstance(exc, DBAPIError)
            and getattr(exc.orig, "sqlstate", None) in _CONFLICT_SQLSTATES)


def is_data_error(exc: BaseException) -> bool:
    """True when the statement failed on the data it was given (a constraint it breaks, class
    23, such as a row whose plan is gone; a value its column refuses, class 22): the
    transaction wrote nothing, and the same statement without that data may succeed."""
    if isinstance(exc, IntegrityError):
        return True
    return (isinstance(exc, DBAPIError)
            and (getattr(exc.orig, "sqlstate", None) or "").startswith(("22", "23")))


def in_list(column: Any, name: str, *, array: bool, of: Any = String) -> Any:  # noqa: ANN401
    """`column` among the values bound as `name`: with `array` (PostgreSQL) one array
    parameter (`= ANY`) of `of`, so the statement is the same for any number of values (and
    can be read straight on the driver: `DirectReads`); otherwise an expanding IN."""
    if array:
        return column == any_(bindparam(name, type_=postgresql.ARRAY(of)))
    return column.in_(bindparam(name, expanding=True))


def for_many(query: Select[Any], column: Any, of: Any = String,  # noqa: ANN401
             ) -> dict[str | None, Select[Any]]:
    """`query` for many values of `column` (of type `of`) at once (`{"keys": [...]}`), built
    once per dialect (`in_list`). `of_dialect` picks the one for a connection."""
    return {"postgresql": query.where(in_list(column, "keys", array=True, of=of)),
            None: query.where(in_list(column, "keys", array=False))}


def of_dialect(queries: dict[str | None, Select[Any]], dialect: str) -> Select[Any]:
    return queries.get(dialect, queries[None])


def dialect_of(session: AsyncSession) -> str:
    """A session's database ("postgresql", "sqlite"); a lazy one is not made for it."""
    return getattr(session, "dialect_name", None) or session.bind.dialect.name


def unresponsive(exc: BaseException) -> bool:
    """The driver gave up waiting for the server (the statement or connect timeout): the
    connection is in an unknown state, and a server that does not answer would not answer its
    ROLLBACK either. It is thrown away (`invalidate`), not given back to the pool."""
    return isinstance(exc, TimeoutError | ConnectionError)


@asynccontextmanager
async def connection(engine: AsyncEngine, *, begin: bool = False) -> AsyncIterator[Any]:
    """`engine.connect()` (or `.begin()`), except that a connection whose server stopped
    answering is invalidated at once: giving it back would wait on its ROLLBACK, one more
    timeout per request in front of a hung database."""
    conn = await engine.connect()
    try:
        if begin:
            async with conn.begin():
                yield conn
        else:
            yield conn
    except BaseException as exc:
        if unresponsive(exc):
            await _throw_away(conn)
        raise
    finally:
        await conn.close()


async def _throw_away(conn: Any) -> None:  # noqa: ANN401 - an AsyncConnection
    """Invalidate a connection whose server stopped answering, closing its socket at once:
    SQLAlchemy would first try a graceful close (a Terminate message and up to 2 s for the
    server to hang up), which a server that does not answer makes the request wait for."""
    with contextlib.suppress(Exception):
        _terminate(await conn.get_raw_connection())
    await conn.invalidate()


def _terminate_session(session: AsyncSession) -> None:
    """`_throw_away` for the connection a session holds, if it holds one (asking the session
    for it would open a new one, and wait on a server that does not answer)."""
    transaction = session.sync_session.get_transaction()
    for held in getattr(transaction, "_connections", {}).values():
        with contextlib.suppress(Exception):
            _terminate(held[0].connection)


def _terminate(pooled: Any) -> None:  # noqa: ANN401 - a pool's proxied DBAPI connection
    terminate = getattr(pooled.driver_connection, "terminate", None)
    if terminate is not None:
        terminate()


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    maker = SessionMaker(engine, expire_on_commit=False, autoflush=False)
    maker.direct = DirectReads(engine) if engine.dialect.name == "postgresql" else None
    return maker


class ReadOnlySession(Session):
    """A session that may only read (the management API's GET requests): on PostgreSQL its
    statements run without a transaction around them (AUTOCOMMIT: no BEGIN and COMMIT round
    trips, two of a read's three), each seeing the data committed when it starts. A write
    through it is a bug, refused before it reaches the database."""


@event.listens_for(ReadOnlySession, "do_orm_execute")
def _refuse_statement(state: ORMExecuteState) -> None:
    if not state.is_select:
        raise RuntimeError("a read-only session cannot write")


@event.listens_for(ReadOnlySession, "before_flush")
def _refuse_flush(session: Session, _flush: UOWTransaction, _instances: Any) -> None:  # noqa: ANN401
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("a read-only session cannot write")


class ReadOnlyAsyncSession(AsyncSession):
    """Gives its connection back to the pool as soon as a statement's rows are in (they are
    buffered), rather than at the end of the request: under load the event loop takes a while
    to come back to a request, and a connection held across those turns is one the other
    requests wait for (at 64 connections, the pool's size divided by that wait bounded a
    plan's listings to a few hundred requests a second)."""

    async def execute(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        result = await super().execute(*args, **kwargs)
        await self.commit()  # nothing to commit: it ends the (autocommit) use of the connection
        return result


async def rows(session: AsyncSession, statement: Any,  # noqa: ANN401
               params: dict[str, Any] | None = None) -> Sequence[Any]:
    """A Core SELECT's rows through the session's connection, not the ORM's loading of them
    (`Session.execute` wraps each row as ORM results go, ~14 µs a row of a token listing's 28
    columns). A read-only session's connection goes back to the pool at once, as its `execute`
    does."""
    direct = getattr(session, "direct", None)
    if direct is not None and getattr(session, "read_only", False) and direct.takes(statement):
        return await direct.all(statement, params)
    conn = await session.connection()
    found = (await conn.execute(statement, params)).all()
    if isinstance(getattr(session, "made", session), ReadOnlyAsyncSession):
        await session.commit()
    return found


class _Prepared:
    """A built-once SELECT compiled for asyncpg: its SQL, its parameters in order with their
    types' conversions, its columns' conversions, and a row type with the columns' names."""

    __slots__ = ("binds", "convert", "make", "required", "sql")

    def __init__(self, statement: Any, dialect: Dialect) -> None:  # noqa: ANN401 - a Select
        compiled = statement.compile(dialect=dialect)
        if compiled.positiontup is None or compiled.post_compile_params \
                or compiled.literal_execute_params:
            raise ValueError("a statement with expanding or literal parameters")
        self.sql = compiled.string
        # (name, conversion, the statement's own value: a literal's, or a bound default)
        self.binds = [(name, bind.type.bind_processor(dialect), bind.effective_value)
                      for name in compiled.positiontup
                      for bind in (compiled.binds[name],)]
        # Values the caller must give (SQLAlchemy refuses a statement without them; a missing
        # `limit` must not become LIMIT NULL, no limit at all).
        self.required = frozenset(name for name in compiled.positiontup
                                  if compiled.binds[name].required)
        self.convert = [(i, convert) for i, c in enumerate(statement.selected_columns)
                        if (convert := c.type.result_processor(dialect, None)) is not None]
        self.make = namedtuple("Row", list(statement.selected_columns.keys()),  # noqa: PYI024
                               rename=True)._make


class DirectReads:
    """Built-once Core SELECTs run by asyncpg itself, on a connection of the engine's pool.

    A read through SQLAlchemy's session and connection costs ~0.4 ms of CPU more than the same
    prepared statement on asyncpg (bench/NOTES.md): the session's unit of work, the greenlet
    hops, the cursor adaptation, the results' wrapping. The management API's and the console's
    listings only read, each statement on its own (no transaction: the read-only sessions are
    autocommit already), so they need none of it. PostgreSQL only; on SQLite the read-only
    session reads. Errors come out as SQLAlchemy's, so they are answered as every other
    database error is (`app.api.errors`); a connection whose server stopped answering is
    thrown away, as `connection` does."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect = engine.dialect
        # By the statement's id; the statement is kept with it, so no id is reused.
        self._prepared: dict[int, tuple[Any, _Prepared | None]] = {}

    def takes(self, statement: Any) -> bool:  # noqa: ANN401 - a Select
        """Whether `statement` runs here: one with a list of values for an IN (expanding) is
        rendered anew for each length, and stays with SQLAlchemy."""
        return self._prepare(statement) is not None

    def _prepare(self, statement: Any) -> _Prepared | None:  # noqa: ANN401 - a Select
        kept = self._prepared.get(id(statement))
        if kept is None or kept[0] is not statement:
            try:
                prepared = _Prepared(statement, self._dialect)
            except ValueError:
                prepared = None
            kept = self._prepared[id(statement)] = (statement, prepared)
        return kept[1]

    async def all(self, statement: Any,  # noqa: ANN401 - a Select built once
                  params: dict[str, Any] | None = None) -> list[Any]:
        prepared = self._prepare(statement)
        if prepared is None:
            raise ValueError("a statement DirectReads does not take (see `takes`)")
        given = params or {}
        if not prepared.required <= given.keys():
            raise ValueError(f"values missing: {sorted(prepared.required - given.keys())}")
        args = [value if convert is None else convert(value)
                for name, convert, own in prepared.binds
                for value in (given.get(name, own),)]
        try:
            pooled = await self._engine.raw_connection()
        except self._dialect.loaded_dbapi.Error as exc:
            # As SQLAlchemy raises it (no statement: none could be had), so a database that
            # refuses connections (restarting, full) is an outage, a 503 (`app.api.errors`).
            raise DBAPIError.instance(None, None, exc, self._dialect.loaded_dbapi.Error,
                                      hide_parameters=True, dialect=self._dialect) from exc
        try:
            found = await pooled.driver_connection.fetch(prepared.sql, *args)
        except BaseException as exc:
            of_driver = _of_driver(exc)
            adapted = _adapted(pooled, exc) if of_driver else exc
            thrown_away = await self._failed(pooled, exc)
            if of_driver:
                # Marked as SQLAlchemy marks a disconnect: a connection thrown away is an
                # outage, a 503 (`app.api.errors`), not a failure of the statement.
                raise DBAPIError.instance(prepared.sql, args, adapted,
                                          self._dialect.loaded_dbapi.Error,
                                          hide_parameters=True, dialect=self._dialect,
                                          connection_invalidated=thrown_away) from exc
            raise
        await greenlet_spawn(pooled.close)
        make = prepared.make
        if not prepared.convert:
            return [make(record) for record in found]
        out = []
        for record in found:
            values = list(record)
            for i, convert in prepared.convert:
                values[i] = convert(values[i])
            out.append(make(values))
        return out

    async def _failed(self, pooled: Any, exc: BaseException) -> bool:  # noqa: ANN401
        """A connection in an unknown state (the server stopped answering, or the read was
        cancelled half way) or closed by the server (its shutdown, a terminated backend) is
        thrown away, not given back (True). On a closed one, as SQLAlchemy does on a
        disconnect, every connection opened before it is replaced at its next checkout: a
        restarted server closed them all."""
        from asyncpg import PostgresError  # the server's own refusal: the connection is sound

        closed = pooled.driver_connection.is_closed()
        if closed or unresponsive(exc) or not isinstance(exc, Exception) \
                or (_of_driver(exc) and not isinstance(exc, PostgresError)):
            _terminate(pooled)
            if closed:
                self._engine.sync_engine.pool._invalidate(pooled, _checkin=False)  # noqa: SLF001
            await greenlet_spawn(pooled.invalidate, exc if isinstance(exc, Exception) else None)
            return True
        await greenlet_spawn(pooled.close)
        return False


def _of_driver(exc: BaseException) -> bool:
    """An error of asyncpg's: the server's (with its SQLSTATE) or the driver's own."""
    return type(exc).__module__.startswith("asyncpg")


def _adapted(pooled: Any, exc: BaseException) -> BaseException:  # noqa: ANN401
    """An asyncpg error as SQLAlchemy's asyncpg adaptation names it (its DBAPI's classes, with
    the SQLSTATE kept), as a read through SQLAlchemy would have raised it."""
    try:
        pooled.dbapi_connection._handle_exception(exc)  # noqa: SLF001 - raises the adapted one
    except Exception as adapted:  # noqa: BLE001
        return adapted
    return exc


class SessionMaker(async_sessionmaker[AsyncSession]):
    """The application's makers of sessions; on PostgreSQL with direct reads, which
    `rows` uses for a read-only session's reads and `read_alone` for any session's."""

    direct: DirectReads | None = None
    read_only = False


async def read_alone(session: AsyncSession, statement: Any,  # noqa: ANN401 - a Select
                     params: dict[str, Any] | None = None) -> Sequence[Any]:
    """A Core SELECT's rows, read outside the session's transaction: for a read that needs
    nothing of it (it may see a commit later than the session's earlier reads did). On
    PostgreSQL straight on asyncpg (`DirectReads`): one round trip, instead of a transaction's
    three when it is the session's first statement. A session that holds a connection gives it
    back first (`release`), so the request never holds one connection while it waits for
    another; one that wrote cannot, and reads through itself."""
    direct = getattr(session, "direct", None)
    if direct is None or not direct.takes(statement) or not await set_apart(session):
        return await rows(session, statement, params)
    return await direct.all(statement, params)


async def set_apart(session: AsyncSession) -> bool:
    """Ready a session's request to read on another connection (`read_alone`, a batched
    `Lookup`): a connection it holds for reads only is given back first (`release`), so the
    request never holds one connection while it waits for another (twenty such requests
    would hold a small pool and wait for each other). False when it wrote: it reads through
    itself, what it wrote included."""
    made = getattr(session, "made", session)
    if made is None:
        return True
    if made.in_transaction() and not has_only_read(made):
        return False
    await release(made)
    return True


def make_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for requests that only read. On SQLite, where a transaction costs no round
    trip, the same as any session's but for the guard against writes."""
    direct = None
    if engine.dialect.name == "postgresql":
        direct = DirectReads(engine)
        engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    maker = SessionMaker(engine, expire_on_commit=False, autoflush=False,
                         class_=ReadOnlyAsyncSession, sync_session_class=ReadOnlySession)
    maker.direct, maker.read_only = direct, True
    return maker


class LazySession:
    """An `AsyncSession` made on first use. A request answered from the token cache never uses
    its session, and constructing one is a measurable part of such a request (bench/NOTES.md).
    Everything is delegated to the real session once it exists."""

    __slots__ = ("_maker", "_session", "direct", "read_only")

    def __init__(self, maker: async_sessionmaker[AsyncSession]) -> None:
        self._maker = maker
        self._session: AsyncSession | None = None
        # A read-only session's reads by `rows` need no session at all (`DirectReads`), nor do
        # any session's reads by `read_alone`.
        self.direct: DirectReads | None = getattr(maker, "direct", None)
        self.read_only: bool = getattr(maker, "read_only", False)

    @property
    def made(self) -> AsyncSession | None:
        """The real session, if anything has used it."""
        return self._session

    @property
    def dialect_name(self) -> str:
        """The database's ("postgresql", "sqlite"), without making the session."""
        return self._maker.kw["bind"].dialect.name

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401
        if self._session is None:
            self._session = self._maker()
        return getattr(self._session, name)

    def in_transaction(self) -> bool:
        return self._session is not None and self._session.in_transaction()

    async def close(self) -> None:
        """Closing a session never made closes nothing, and makes none."""
        if self._session is not None:
            await self._session.close()


# A session that wrote says so in its `info`: any statement but a SELECT (ORM or Core, through
# `Session.execute`), any flush. Such a session commits (`session_scope`), and one that must only
# have read can tell (`has_only_read`).
_WROTE = "tessera.wrote"


@event.listens_for(Session, "do_orm_execute")
def _note_statement(state: ORMExecuteState) -> None:
    # A read that locks rows (FOR UPDATE) counts too: giving its connection back would end the
    # transaction and free the locks (`release`, `read_alone`).
    if not state.is_select or getattr(state.statement, "_for_update_arg", None) is not None:
        state.session.info[_WROTE] = True


@event.listens_for(Session, "after_flush")
def _note_flush(session: Session, _flush: UOWTransaction) -> None:
    session.info[_WROTE] = True


def has_only_read(session: AsyncSession) -> bool:
    """No object awaits a flush, nothing but SELECTs ran, and no commit hook is registered:
    closing the session (its transaction rolled back) loses nothing. (A `LazySession` never
    made has done nothing at all, and is not made to say so.)"""
    if isinstance(session, LazySession):
        if session.made is None:
            return True
        session = session.made
    return not (session.new or session.dirty or session.deleted or session.info)


def _idle(session: AsyncSession | None) -> bool:
    """Nothing to commit or give back: no session made, or no transaction began and nothing
    to commit (`has_only_read`: no object awaits a flush, no write ran, no commit hook such as
    the token cache's evictions was registered)."""
    return session is None or (not session.in_transaction() and has_only_read(session))


async def release(session: AsyncSession) -> None:
    """Give back the pool connection of a session that has only read, before the request waits
    on something that takes a connection of its own (a unit of work of its own, a group write, a
    batch of DPoP proofs). A request that holds one connection while waiting for another is, with
    as many such requests as the pool has connections, a deadlock until the pool's timeout. The
    session stays usable: its next statement takes a connection again."""
    if session.in_transaction() and has_only_read(session):
        await session.close()


async def write_lock(session: AsyncSession, table: Any, condition: Any) -> None:  # noqa: ANN401
    """Before a read-modify-write of the rows `condition` picks: on SQLite, take the database's
    write lock first (a no-op UPDATE of those rows). SQLite ignores `FOR UPDATE`, and its driver
    begins a transaction only at the first write, so without this the read would see a state a
    concurrent writer is about to replace, and one of the two writes would be lost. PostgreSQL
    needs nothing: the read itself locks (`with_for_update`)."""
    if session.bind.dialect.name == "sqlite":
        key = table.__table__.primary_key.columns.values()[0]
        await session.execute(update(table).where(condition).values({key.key: key}))


async def persist_before_refusing(session: AsyncSession) -> None:
    """Commit a request's unit of work although the request is about to fail: for what must
    outlive the error answer, which otherwise rolls it back (a security reaction such as
    revoking a replayed grant, or the audit event of a failed sign-in)."""
    await session.commit()


@asynccontextmanager
async def session_scope(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on any error. The only place that commits.

    The session is made on first use, and one that never touched the database (everything came
    from the token cache) is left as it is: committing or closing it would only cost a task and
    a shield (bench/NOTES.md)."""
    lazy = LazySession(maker)
    touched = False
    try:
        yield lazy  # an AsyncSession in all but construction time
        if touched := not _idle(lazy.made):
            await lazy.made.commit()
    except BaseException as exc:
        if touched or not _idle(lazy.made):
            touched = True
            if unresponsive(exc):
                # No ROLLBACK to a server that does not answer: the connection goes.
                _terminate_session(lazy.made)
                await lazy.made.invalidate()
            else:
                await lazy.made.rollback()
        raise
    finally:
        session = lazy.made
        if session is not None and (touched or session.sync_session.identity_map):
            await session.close()
