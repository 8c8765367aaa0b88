"""An in-process cache of token facts, kept true across replicas by PostgreSQL LISTEN/NOTIFY.

Rule 3 and the cache bound of docs/design.md: a revoked token, a period change or an integration's
review or installation change must stop working on every replica within a stated bound.

- What is cached is the *facts* of a found token (`StoredToken`), never a verdict: the verdict is
  recomputed per request from the facts and the clock, so expiry needs no invalidation. Unknown
  tokens are never cached, so a token issued a moment ago is never refused from the cache.
- A service that changes check facts calls `changed(session, ...)` inside its transaction. It
  evicts at once on this process, again right after the commit (so a read racing the commit
  cannot put old facts back), and sends `pg_notify('tessera_invalidate', ...)`, which PostgreSQL
  delivers to every replica's listener at commit (and drops on rollback).
- The cache answers only while this process's listener is known to be healthy: its heartbeat
  succeeded within the last `token_cache_bound_seconds` (default 1 s). A lost or silent listener
  connection therefore disables and clears the cache within the bound (fail safe); the listener
  reconnects by itself. So the bound on a stale answer is `token_cache_bound_seconds`.
- A read that began before any eviction may not store what it read (a generation counter).
- On SQLite there is no NOTIFY; the cache stays off there (no listener, no answers).
- Beside tokens it keeps the clients that authenticated to introspection or the token endpoint,
  keyed by a digest of the credentials exactly as presented and evicted with their integration:
  any change to a client's secret or rights must call `changed(session, integration_id=...)`.
  And it keeps, per integration, the installation state and plan period the token endpoint reads
  to grant `client_credentials` (evicted with the integration, and by any plan change): an
  installation change must call `changed(session, integration_id=...)` too.
- And it keeps listings as answered (pages of tokens and of the audit trail: `read_listing`),
  each until the first instant one of its rows is judged otherwise, for `LISTING_SECONDS` at
  most; dropped by any change above, and, for their plans only, by rows inserted into
  `tokens` or `audit_events` by this process (at once: `_wrote`), and by rows inserted or
  deleted by anyone (on PostgreSQL, through the database's triggers: migration 0010,
  `Keys.listed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Engine, Pool, event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from app.ops.metrics import CACHE
from app.tokens.repository import StoredToken

log = logging.getLogger("tessera.cache")

# Bound once: the lookup is on the hottest path there is.
_TOKEN_HIT, _TOKEN_MISS = ("token", "hit"), ("token", "miss")
_CLIENT_HIT, _CLIENT_MISS = ("client", "hit"), ("client", "miss")

CHANNEL = "tessera_invalidate"
APP_NAME = "tessera-cache-listener"  # how the listener's connection shows in pg_stat_activity
# pg_notify payloads are limited to 8000 bytes; past this many ids the whole cache is cleared.
MAX_IDS_IN_PAYLOAD = 100
_PENDING = "tessera_cache_pending"
_DEAD_AFTER_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class Keys:
    """What changed. Every key given evicts every cached token it names (a union); `listed`
    and `listed_all` name listings only."""

    token_ids: frozenset[uuid.UUID] = frozenset()
    plan_id: uuid.UUID | None = None
    integration_id: uuid.UUID | None = None
    family_id: uuid.UUID | None = None
    everything: bool = False
    # A user's facts or console viewer (their language chosen, or a row edited by hand).
    user_id: uuid.UUID | None = None
    # Plans some of whose tokens or audit events were added or deleted (`listed_all`: any
    # plan's, or the platform's): only the listings kept of them change (`get_listing`). Sent
    # by the database itself, from a trigger on each insert or delete (migration 0010).
    listed: frozenset[uuid.UUID] = frozenset()
    listed_all: bool = False

    @property
    def only_listed(self) -> bool:
        """Nothing changed but rows added to or deleted from listings."""
        return bool(self.listed or self.listed_all) and not (
            self.token_ids or self.plan_id or self.integration_id or self.family_id
            or self.user_id or self.everything)

    def payload(self) -> str:
        if self.everything or len(self.token_ids) > MAX_IDS_IN_PAYLOAD:
            return json.dumps({"all": True})
        body: dict[str, object] = {}
        if self.token_ids:
            body["t"] = sorted(str(t) for t in self.token_ids)
        if self.listed_all or len(self.listed) + len(self.token_ids) > MAX_IDS_IN_PAYLOAD:
            body["l"] = "all"  # both lists within pg_notify's 8000 bytes
        elif self.listed:
            body["l"] = sorted(str(p) for p in self.listed)
        for name, value in (("p", self.plan_id), ("i", self.integration_id),
                            ("f", self.family_id), ("u", self.user_id)):
            if value is not None:
                body[name] = str(value)
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_payload(cls, payload: str) -> Keys:
        """A payload this module wrote. Anything unreadable clears everything (fail safe)."""
        try:
            body = json.loads(payload)
            if body.get("all"):
                return cls(everything=True)

            def _id(name: str) -> uuid.UUID | None:
                return uuid.UUID(body[name]) if body.get(name) else None

            listed = body.get("l") or ()  # null: plans not named
            return cls(frozenset(uuid.UUID(t) for t in body.get("t", ())), _id("p"), _id("i"),
                       _id("f"), user_id=_id("u"), listed_all=listed == "all",
                       listed=frozenset() if listed == "all"
                       else frozenset(uuid.UUID(p) for p in listed))
        except (ValueError, TypeError, AttributeError):
            return cls(everything=True)


# What `TokenCache.get_plan` keeps of a plan (`read_plan`'s `what`).
_OF_A_PLAN = ("policy", "history", "integrations")

# What listings kept may weigh at most, together (`_weight`: bytes of their answers, roughly;
# `TESSERA_TOKEN_LISTINGS_MEGABYTES`), and how long one is kept at most: rows edited in the
# database by hand, which nobody announces, are seen within that time (as users' facts are).
LISTINGS_BYTES = 128 * 1024 * 1024
LISTING_SECONDS = 60.0

# How long a user's cached facts (email, name, role) are used before they are read again.
USER_FACTS_SECONDS = 60.0


@dataclass(eq=False)
class TokenCache:
    """A bounded LRU map digest -> StoredToken with secondary indexes for eviction."""

    size: int
    bound_seconds: float = 1.0
    listings_bytes: int = LISTINGS_BYTES
    generation: int = 0
    _entries: OrderedDict[str, StoredToken] = field(default_factory=OrderedDict)
    _by_id: dict[uuid.UUID, str] = field(default_factory=dict)
    _by_plan: dict[uuid.UUID, set[str]] = field(default_factory=dict)
    _by_integration: dict[uuid.UUID, set[str]] = field(default_factory=dict)
    _by_family: dict[uuid.UUID, set[str]] = field(default_factory=dict)
    # Authenticated clients: digest of the credentials as presented -> what a caller of
    # introspection needs; evicted with their integration.
    _clients: OrderedDict[str, tuple[uuid.UUID, Any]] = field(default_factory=OrderedDict)
    # Where an integration may be granted tokens: (integration id, plan id or None) -> the
    # installation state(s) and plan period(s) the token endpoint read; evicted with their
    # integration and by any plan change.
    _placements: dict[tuple[uuid.UUID, uuid.UUID | None], Any] = field(default_factory=dict)
    # Monotonic time until which answers may be served; moved on by each listener heartbeat.
    _fresh_until: float = 0.0
    # Users' facts (`app.users.facts`): no API changes them once a user is made, but an
    # operator may (a compromised admin demoted in the database): each is read again after
    # `USER_FACTS_SECONDS`, and, like every answer here, served only while the listener is
    # healthy. user id -> (facts, monotonic time read).
    _users: dict[uuid.UUID, tuple[Any, float]] = field(default_factory=dict)
    # The console's viewers (`app.console.web.Viewer`: the user's facts, language and plan
    # name), kept as users' facts are; a language chosen evicts both on every replica
    # (`changed(user_id=...)`). user id -> (viewer, monotonic time).
    _viewers: dict[uuid.UUID, tuple[Any, float]] = field(default_factory=dict)
    # A plan's users as the API lists them, kept as users' facts are. Users are only ever
    # added; each addition is announced as a change of the new user (`changed(user_id=...)`),
    # which drops every plan's list (additions are rare: simpler than a key of their own).
    # plan id -> (rows, monotonic time).
    _plan_users: dict[uuid.UUID, tuple[Any, float]] = field(default_factory=dict)
    # Moved by every eviction of a user (and by `clear`): a read of a user's facts or viewer
    # that began before one is not kept (the token's `generation`, for users alone, so that
    # token changes do not keep users' facts from being kept).
    users_generation: int = 0
    # What pages read of a plan, beside its tokens' facts: (what, plan id) -> its policy
    # (`"policy"`), its periods' history (`"history"`) or its integrations' rows as listed
    # (`"integrations"`); evicted, as the plan's tokens are, by a change of the plan
    # (`changed(plan_id=...)`), on every replica, and the integrations' rows by any
    # integration's change too (which names the integration, not the plans it is in).
    _plans: dict[tuple[str, uuid.UUID], Any] = field(default_factory=dict)
    # Listings as answered (a page of a plan's tokens or of its audit trail): key -> (plan id,
    # the answer, the instant it was judged at, the first instant it may be judged otherwise
    # or None, its weight, the monotonic time it was kept), least recently used first. Dropped
    # by any change this cache hears of, except rows added to or removed from listings, which
    # drop only the listings of the plans named (`Keys.listed`); by every insert of tokens or
    # audit events through this process (`_wrote`), likewise; and after `LISTING_SECONDS`.
    _listings: OrderedDict[tuple[Any, ...], _Listing] = field(default_factory=OrderedDict)
    _listings_weight: int = 0
    # Moved whenever listings are dropped: a listing read that began before is not kept.
    listings_generation: int = 0

    def __post_init__(self) -> None:
        _caches.add(self)

    # -- health ---------------------------------------------------------------------------
    @property
    def serving(self) -> bool:
        return self.size > 0 and time.monotonic() < self._fresh_until

    def heartbeat(self, sent_at: float) -> None:
        """The listener's connection answered a query sent at `sent_at` (monotonic): every
        notification committed before then has been delivered, so answers stay good until
        `sent_at + bound`."""
        self._fresh_until = max(self._fresh_until, sent_at + self.bound_seconds)

    def disable(self) -> None:
        self._fresh_until = 0.0
        self.clear()

    # -- reads and writes -----------------------------------------------------------------
    def get(self, digest: str, *, count: bool = True) -> StoredToken | None:
        """A token's cached facts. `count=False`: neither hit nor miss is counted (for
        `/metrics`), because the caller may leave the request to a path that asks again
        (`app.serving`); it counts its hits itself when it answers (`counted_hits`)."""
        if not self.serving:
            return None
        stored = self._entries.get(digest)
        if stored is not None:
            self._entries.move_to_end(digest)
            if count:
                CACHE.inc(*_TOKEN_HIT)
        elif count:
            CACHE.inc(*_TOKEN_MISS)
        return stored

    @staticmethod
    def counted_hits(*, tokens: int = 0, clients: int = 0) -> None:
        """Hits found with `count=False`, counted once the answer they gave is sent."""
        for _ in range(tokens):
            CACHE.inc(*_TOKEN_HIT)
        for _ in range(clients):
            CACHE.inc(*_CLIENT_HIT)

    def put(self, digest: str, stored: StoredToken, generation: int) -> None:
        """Store facts read from the database, unless anything was evicted since the read
        began (`generation` is `self.generation` taken before the read)."""
        if generation != self.generation or not self.serving or digest in self._entries:
            return
        self._entries[digest] = stored
        self._by_id[stored.id] = digest
        _index(self._by_plan, stored.plan_id, digest)
        _index(self._by_integration, stored.integration_id, digest)
        _index(self._by_family, stored.family_id, digest)
        while len(self._entries) > self.size:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def get_client(self, key: str, *, count: bool = True) -> Any | None:  # noqa: ANN401
        """A client that authenticated with exactly these credentials, if cached. `key` is a
        digest of the credentials as presented, so other (or wrong) ones never match.
        `count`: as for `get`."""
        if not self.serving:
            return None
        entry = self._clients.get(key)
        if count:
            CACHE.inc(*(_CLIENT_HIT if entry is not None else _CLIENT_MISS))
        return entry[1] if entry is not None else None

    def put_client(self, key: str, integration_id: uuid.UUID, facts: Any,  # noqa: ANN401
                   generation: int) -> None:
        if generation != self.generation or not self.serving:
            return
        self._clients[key] = (integration_id, facts)
        while len(self._clients) > self.size:
            self._clients.popitem(last=False)

    def get_user(self, user_id: uuid.UUID) -> Any | None:  # noqa: ANN401 - a UserOut
        return self._timed_get(self._users, user_id)

    def put_user(self, user_id: uuid.UUID, facts: Any,  # noqa: ANN401
                 generation: int) -> None:
        """`generation`: `users_generation` as it was when the read of `facts` began."""
        self._timed_put(self._users, user_id, facts, generation)

    def get_viewer(self, user_id: uuid.UUID) -> Any | None:  # noqa: ANN401 - a Viewer
        return self._timed_get(self._viewers, user_id)

    def put_viewer(self, user_id: uuid.UUID, viewer: Any,  # noqa: ANN401
                   generation: int) -> None:
        self._timed_put(self._viewers, user_id, viewer, generation)

    def get_plan_users(self, plan_id: uuid.UUID) -> Any | None:  # noqa: ANN401 - rows
        return self._timed_get(self._plan_users, plan_id)

    def put_plan_users(self, plan_id: uuid.UUID, found: Any,  # noqa: ANN401
                       generation: int) -> None:
        """`generation`: `users_generation` as it was when the read of `found` began."""
        self._timed_put(self._plan_users, plan_id, found, generation)

    def _timed_get(self, kept: dict[uuid.UUID, tuple[Any, float]],
                   user_id: uuid.UUID) -> Any | None:  # noqa: ANN401
        if not self.serving:
            return None
        entry = kept.get(user_id)
        if entry is None or time.monotonic() - entry[1] > USER_FACTS_SECONDS:
            return None
        return entry[0]

    def _timed_put(self, kept: dict[uuid.UUID, tuple[Any, float]], user_id: uuid.UUID,
                   value: Any, generation: int) -> None:  # noqa: ANN401
        if generation != self.users_generation or not self.serving:
            return
        if len(kept) >= self.size:
            kept.clear()
        kept[user_id] = (value, time.monotonic())

    def get_plan(self, what: str, plan_id: uuid.UUID) -> Any | None:  # noqa: ANN401
        """What was read of the plan as `what` (None: not cached)."""
        if not self.serving:
            return None
        return self._plans.get((what, plan_id))

    def put_plan(self, what: str, plan_id: uuid.UUID, facts: Any,  # noqa: ANN401
                 generation: int) -> None:
        if generation != self.generation or not self.serving:
            return
        if len(self._plans) >= self.size:
            self._plans.clear()
        self._plans[(what, plan_id)] = facts

    def get_placement(self, integration_id: uuid.UUID,
                      plan_id: uuid.UUID | None) -> Any | None:  # noqa: ANN401
        """What the token endpoint read of the integration's installation(s) and plan period(s),
        if cached (None: not cached)."""
        if not self.serving:
            return None
        return self._placements.get((integration_id, plan_id))

    def put_placement(self, integration_id: uuid.UUID, plan_id: uuid.UUID | None,
                      facts: Any, generation: int) -> None:  # noqa: ANN401
        if generation != self.generation or not self.serving:
            return
        if len(self._placements) >= self.size:
            self._placements.clear()  # a few per integration: this bound is never near
        self._placements[(integration_id, plan_id)] = facts

    def get_listing(self, key: tuple[Any, ...], now: datetime) -> Any | None:  # noqa: ANN401
        """The answer kept for `key`, if it was judged at or before `now` and would still be
        judged the same at `now`."""
        if not self.serving:
            return None
        entry = self._listings.get(key)
        if entry is None:
            return None
        if now < entry.since or (entry.until is not None and now >= entry.until) \
                or time.monotonic() - entry.kept_at > LISTING_SECONDS:
            return None
        self._listings.move_to_end(key)
        return entry.value

    def put_listing(self, key: tuple[Any, ...], plan_id: uuid.UUID, value: Any,  # noqa: ANN401
                    since: datetime, until: datetime | None, generation: int, *,
                    weight: int | None = None) -> None:
        """`generation`: `listings_generation` as it was when the read of `value` began;
        `since`, `until`: from when, and until when (excluded; None: ever), it holds;
        `weight`: about the bytes it holds of its own (by default, `_weight`'s guess)."""
        if generation != self.listings_generation or not self.serving:
            return
        weight = _weight(value) if weight is None else weight
        if weight > self.listings_bytes // 8:
            return  # a page that large for the room there is, is read each time
        self._forget(key)
        while self._listings and self._listings_weight + weight > self.listings_bytes:
            self._forget(next(iter(self._listings)))  # the least recently used
        self._listings[key] = _Listing(plan_id, value, since, until, weight, time.monotonic())
        self._listings_weight += weight

    def _forget(self, key: tuple[Any, ...]) -> None:
        entry = self._listings.pop(key, None)
        if entry is not None:
            self._listings_weight -= entry.weight

    def drop_listings(self, plans: frozenset[uuid.UUID] | None = None) -> None:
        """Drop the listings of `plans` (None: all)."""
        self.listings_generation += 1
        if plans is None:
            self._listings.clear()
            self._listings_weight = 0
        elif self._listings:
            for key in [k for k, entry in self._listings.items() if entry.plan_id in plans]:
                self._forget(key)

    def evict(self, keys: Keys) -> None:
        if keys.only_listed:
            self.drop_listings(None if keys.listed_all else keys.listed)
            return
        self.generation += 1
        if keys.everything:
            self.clear()
            return
        # What a listed row is judged by changed: when only tokens did, and the change names
        # their plans, those plans' listings go; otherwise (a plan, an integration, a user, or
        # tokens of plans unknown) every listing.
        of_tokens = not (keys.plan_id or keys.integration_id or keys.user_id)
        self.drop_listings(keys.listed if of_tokens and keys.listed and not keys.listed_all
                           else None)
        if keys.plan_id is not None:
            self._placements.clear()  # periods change rarely; any plan's change drops them all
            for what in _OF_A_PLAN:
                self._plans.pop((what, keys.plan_id), None)
        if keys.user_id is not None:
            self.users_generation += 1
            self._users.pop(keys.user_id, None)
            self._viewers.pop(keys.user_id, None)
            self._plan_users.clear()
        if keys.integration_id is not None:
            for key in [k for k in self._plans if k[0] == "integrations"]:
                del self._plans[key]
            for key in [k for k, (i, _f) in self._clients.items() if i == keys.integration_id]:
                del self._clients[key]
            for key in [k for k in self._placements if k[0] == keys.integration_id]:
                del self._placements[key]
        doomed: set[str] = set()
        for token_id in keys.token_ids:
            if (digest := self._by_id.get(token_id)) is not None:
                doomed.add(digest)
        for index, key in ((self._by_plan, keys.plan_id),
                           (self._by_integration, keys.integration_id),
                           (self._by_family, keys.family_id)):
            if key is not None:
                doomed.update(index.get(key, ()))
        for digest in doomed:
            self._drop(digest)

    def clear(self) -> None:
        self.generation += 1
        self.users_generation += 1
        self._entries.clear()
        self._by_id.clear()
        self._by_plan.clear()
        self._by_integration.clear()
        self._by_family.clear()
        self._clients.clear()
        self._placements.clear()
        self._users.clear()
        self._viewers.clear()
        self._plan_users.clear()
        self._plans.clear()
        self.drop_listings()

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, digest: str) -> None:
        stored = self._entries.pop(digest, None)
        if stored is None:
            return
        self._by_id.pop(stored.id, None)
        _unindex(self._by_plan, stored.plan_id, digest)
        _unindex(self._by_integration, stored.integration_id, digest)
        _unindex(self._by_family, stored.family_id, digest)


def _index(index: dict[uuid.UUID, set[str]], key: uuid.UUID | None, digest: str) -> None:
    if key is not None:
        index.setdefault(key, set()).add(digest)


def _unindex(index: dict[uuid.UUID, set[str]], key: uuid.UUID | None, digest: str) -> None:
    if key is not None and (digests := index.get(key)) is not None:
        digests.discard(digest)
        if not digests:
            del index[key]


class _Listing(NamedTuple):
    plan_id: uuid.UUID
    value: Any
    since: datetime
    until: datetime | None
    weight: int
    kept_at: float


def _weight(value: Any) -> int:  # noqa: ANN401
    """About what a kept answer holds, in bytes: its text, or 2 kB per model or row."""
    if isinstance(value, bytes | str):
        return len(value) + 64
    if isinstance(value, tuple | list):
        return 64 + sum(_weight(v) for v in value)
    return 2048


# Every cache of this process: a change evicts from all of them (several apps share a process
# in tests; evicting too much is always safe).
_caches: weakref.WeakSet[TokenCache] = weakref.WeakSet()


_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


def evict_here(keys: Keys) -> None:
    """Evict from every cache of this process."""
    for cache in list(_caches):
        cache.evict(keys)


async def announce(conn: AsyncConnection, keys: Keys) -> None:
    """`changed` for a unit of work on a bare connection (`app/tokens/batches.py`): sends the
    NOTIFY inside its transaction. The caller evicts here (`evict_here`) before and after."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_NOTIFY, {"channel": CHANNEL, "payload": keys.payload()})


@functools.lru_cache(maxsize=64)
def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """The engine (same pool) for one-statement reads: a single SELECT is consistent on its
    own, so it needs no BEGIN and ROLLBACK round trips around it."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


async def read_through(cache: TokenCache | None, digest: str,
                       read: Callable[[str], Awaitable[StoredToken | None]]) -> StoredToken | None:
    """A token's facts from the cache, or from `read` (a repository lookup, or a batched one:
    `app/tokens/batches.py`), cached if found. Unknown tokens are never cached."""
    stored = cache.get(digest) if cache is not None else None
    if stored is not None:
        return stored
    return await read_missed(cache, digest, read)


async def read_missed(cache: TokenCache | None, digest: str,
                      read: Callable[[str], Awaitable[StoredToken | None]]) -> StoredToken | None:
    """`read_through` after the caller's own lookup missed (so the miss is counted once)."""
    generation = cache.generation if cache is not None else 0
    stored = await read(digest)
    if stored is not None and cache is not None:
        cache.put(digest, stored, generation)
    return stored


async def read_plan(kept: TokenCache | None, what: str, plan_id: uuid.UUID,
                    read: Callable[[], Awaitable[Any]]) -> Any:  # noqa: ANN401
    """What `read` gives of a plan, kept beside its tokens as `what` when `kept` (the cache) is
    given (`get_plan`): a read that began before a change of the plan is not kept."""
    if kept is None:
        return await read()
    if (found := kept.get_plan(what, plan_id)) is not None:
        return found
    generation = kept.generation
    found = await read()
    kept.put_plan(what, plan_id, found, generation)
    return found


async def read_listing(kept: TokenCache | None, key: tuple[Any, ...], plan_id: uuid.UUID,
                       now: datetime,
                       read: Callable[[], Awaitable[tuple[Any, datetime | None]]]) -> Any:  # noqa: ANN401
    """A listing of the plan `plan_id` as `read` answers it at `now`, with the first instant
    it may answer otherwise (None: never, until something changes); kept under `key` when
    `kept` (the cache) is given, and answered from there until that instant or a change. A
    read that began before a change is not kept."""
    if kept is None:
        return (await read())[0]
    if (found := kept.get_listing(key, now)) is not None:
        return found
    generation = kept.listings_generation
    found, until = await read()
    kept.put_listing(key, plan_id, found, now, until, generation)
    return found


def listed_here(plans: frozenset[uuid.UUID] | None = None) -> None:
    """Rows were added to the listings of `plans` (None: of any plan) by this process: every
    cache drops those listings."""
    for cache in list(_caches):
        cache.drop_listings(plans)


# Statements that add rows to what listings show. Matched in the SQL as sent, so that no way of
# writing (ORM flush, Core insert, the batches' own SQL) escapes.
_LISTED_INSERTS = ("INSERT INTO tokens ", "INSERT INTO audit_events ")
_LISTED = "tessera_listed"
# An execution option naming the plans whose rows a statement of SQL text adds (`listing`).
LISTING = "tessera_listing"
_NONE_YET = object()


def listing(rows: Iterable[dict[str, Any]]) -> dict[str, frozenset[uuid.UUID] | None]:
    """The execution options of SQL text inserting `rows` (tokens, audit events): the plans
    they are in (None when one is the platform's: every plan's trail may show it)."""
    plans = {row["plan_id"] for row in rows}
    return {LISTING: None if None in plans else frozenset(plans)}


def _plans_of(context: Any) -> frozenset[uuid.UUID] | None:  # noqa: ANN401
    """The plans whose listings a statement adds rows to; None: any plan's, or not known."""
    options = context.execution_options
    if LISTING in options:
        return options[LISTING]
    if context.compiled is None or not context.isinsert:
        return None
    plans = {row.get("plan_id") for row in context.compiled_parameters}
    return None if None in plans else frozenset(plans)


@event.listens_for(Engine, "after_cursor_execute")
def _wrote(conn: Any, _cursor: Any, statement: str, _params: Any, context: Any,  # noqa: ANN401
           _many: bool) -> None:
    """Rows added by this process: the listings of their plans dropped now (a read racing the
    statement is not kept), and again when its connection goes back to the pool, after the
    commit (`_returned`). Other replicas hear of it from the database (`Keys.listed`)."""
    if "INSERT INTO" in statement and any(i in statement for i in _LISTED_INSERTS):
        plans = _plans_of(context)
        before = conn.info.get(_LISTED, _NONE_YET)
        if before is not _NONE_YET:  # with the rows of the statements before (None: any plan)
            plans = None if plans is None or before is None else before | plans
        conn.info[_LISTED] = plans
        listed_here(plans)


@event.listens_for(Pool, "checkin")
def _returned(_dbapi_conn: Any, record: Any) -> None:  # noqa: ANN401
    """The second drop, after the commit: every connection goes back to the pool once its
    transaction ended (committed, rolled back or thrown away). One dropped by the garbage
    collector instead is not checked in; its rows are then heard by NOTIFY, or within
    `LISTING_SECONDS`."""
    if record is not None and (plans := record.info.pop(_LISTED, _NONE_YET)) is not _NONE_YET:
        listed_here(plans)


async def changed(session: AsyncSession, *, token_ids: Iterable[uuid.UUID] = (),
                  plan_id: uuid.UUID | None = None, integration_id: uuid.UUID | None = None,
                  family_id: uuid.UUID | None = None, user_id: uuid.UUID | None = None,
                  everything: bool = False, listed: Iterable[uuid.UUID] = ()) -> None:
    """Call inside the transaction that changes what a token check reads.

    Pass what changed: revoked or rotated tokens (`token_ids`, or a whole refresh `family_id`),
    a plan's period (`plan_id`), an integration's review, exception or installation
    (`integration_id`), a user's language, or a user added (`user_id`); with tokens, the plans
    they are in (`listed`), so that only those plans' kept listings go. Evicts on this process
    now and after the commit; on PostgreSQL the NOTIFY reaches every replica when the
    transaction commits, and never if it rolls back (then this process evicts again: a read in
    the transaction may have cached its changes).
    """
    keys = Keys(frozenset(token_ids), plan_id, integration_id, family_id, everything, user_id,
                frozenset(listed))
    evict_here(keys)
    session.info.setdefault(_PENDING, []).append(keys)
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(_NOTIFY, {"channel": CHANNEL, "payload": keys.payload()})


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    # A read that ran between the first eviction and the commit may have stored old facts.
    for keys in session.info.pop(_PENDING, ()):
        evict_here(keys)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    # What a read in the rolled-back transaction saw of its own changes may have been cached.
    for keys in session.info.pop(_PENDING, ()):
        evict_here(keys)


class Listener:
    """LISTENs on its own connection (not the pool's), evicts on NOTIFY and keeps the cache's
    heartbeat. Any failure disables the cache and reconnects after a pause."""

    def __init__(self, cache: TokenCache, dsn: str, *, heartbeat_seconds: float = 0.25,
                 retry_seconds: float = 0.5, throttles: Any = None) -> None:  # noqa: ANN401
        self.cache = cache
        # The blocks of guessed secrets (`app.throttle.store.Throttles`), heard on their own
        # channel on the same connection.
        self.throttles = throttles
        self.dsn = dsn
        self.heartbeat_seconds = heartbeat_seconds
        self.retry_seconds = retry_seconds
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    @classmethod
    def for_engine(cls, cache: TokenCache, engine: AsyncEngine, *,
                   throttles: Any = None, **kwargs: float) -> Listener | None:  # noqa: ANN401
        """A listener for a PostgreSQL engine (also when the cache is off: it hears throttle
        blocks too); None for any other store."""
        if engine.dialect.name != "postgresql" or (cache.size <= 0 and throttles is None):
            return None
        dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        # At least two heartbeats per bound, so one slow answer does not switch the cache off.
        heartbeat = min(kwargs.pop("heartbeat_seconds", 0.25), cache.bound_seconds / 2)
        return cls(cache, dsn, heartbeat_seconds=heartbeat, throttles=throttles, **kwargs)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tessera-cache-listener")

    async def stop(self) -> None:
        self.cache.disable()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        evict_here(Keys.from_payload(payload))

    def _throttled(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.throttles.heard(payload)

    def _lost(self, _conn: object) -> None:
        self.cache.disable()
        self.connected.clear()

    async def _run(self) -> None:
        import asyncpg

        failures = 0
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=max(self.retry_seconds * 4, 2),
                                             server_settings={"application_name": APP_NAME})
                conn.add_termination_listener(self._lost)
                await conn.add_listener(CHANNEL, self._notified)
                if self.throttles is not None:
                    await conn.add_listener(self.throttles.channel, self._throttled)
                    # Blocks set while we were away: learnt now.
                    await self.throttles.load(datetime.now(UTC), conn)
                # Whatever was missed while we were away is unknown: start empty.
                self.cache.clear()
                self.connected.set()
                failures = 0
                log.info("token cache listener connected")
                while True:
                    sent_at = time.monotonic()
                    # A slow answer only lets the bound pass (the cache stops answering until
                    # the next one); notifications are never lost on a live connection, so the
                    # connection is given up only when it looks dead.
                    await conn.fetchval("SELECT 1", timeout=_DEAD_AFTER_SECONDS)
                    self.cache.heartbeat(sent_at)
                    await asyncio.sleep(self.heartbeat_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: disable, wait, reconnect
                self.cache.disable()
                self.connected.clear()
                failures += 1
                if failures == 1:  # once per outage, not once per retry
                    log.warning("token cache listener lost (%s); cache off until it reconnects",
                                type(exc).__name__)
            finally:
                if conn is not None:
                    conn.terminate()
            # Back off up to 4x while the database stays away; the cache is off meanwhile.
            await asyncio.sleep(self.retry_seconds * min(failures, 4))
