"""Where throttle counts live, and how every replica learns of a block at once.

Counts are rows of `throttles`, changed in a transaction per failed attempt (the attacker's
cost; a success costs nothing). Whether a key is blocked is answered in process, from a map of
blocks: filled by this process's own failures, on PostgreSQL by a NOTIFY from every other
replica (`tessera_throttle`, heard by the token cache's listener) and at its connection by a
read of the blocks in force. So checking a key on PostgreSQL costs no round trip, whatever the
load; on SQLite it costs a local read of the keys' rows.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from app import db
from app.ops import metrics
from app.throttle.models import Throttle
from app.throttle.policy import LIMITS, Guarded, State, after_failure, retry_after

log = logging.getLogger("tessera.throttle")

CHANNEL = "tessera_throttle"


@dataclass(frozen=True, slots=True)
class Key:
    """What is counted: a guarded secret and whose (an account's login name, a client id, a
    source address), kept as a digest so the table holds no personal data."""

    guarded: Guarded
    subject: str

    def __str__(self) -> str:
        digest = hashlib.sha256(self.subject.strip().lower().encode("utf-8", "replace"))
        return f"{self.guarded}:{digest.hexdigest()[:40]}"


def source_of(address: str) -> str:
    """What a source address is counted as: itself, or for IPv6 its /64 (one host's usual
    allocation: counting each of its addresses apart would let it guess without limit)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def password_keys(login: str, source: str | None) -> list[Key]:
    """Counted per email, whatever plan the login names (`<plan id>/email` has many
    spellings of the same plan: each would get a count of its own), and per source."""
    _plan, slash, email = login.strip().partition("/")
    keys = [Key(Guarded.password_account, email if slash else login)]
    if source:
        keys.append(Key(Guarded.password_source, source_of(source)))
    return keys


def secret_keys(client_id: str, source: str | None) -> list[Key]:
    keys = [Key(Guarded.secret_client, client_id)]
    if source:
        keys.append(Key(Guarded.secret_source, source_of(source)))
    return keys


class Throttles:
    channel = CHANNEL

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._blocked: dict[str, datetime] = {}

    async def check(self, keys: list[Key], now: datetime) -> int | None:
        """Seconds until all of `keys` may try again; None: they may now. On PostgreSQL from
        the map every replica's NOTIFY keeps; on SQLite (no NOTIFY; several processes may
        share the file) the keys' rows are read first, a local read."""
        if self.engine.dialect.name != "postgresql":
            names = [str(k) for k in keys]
            async with db.connection(self.engine) as conn:
                for key, until in (await conn.execute(
                        select(Throttle.key, Throttle.blocked_until)
                        .where(Throttle.key.in_(names), Throttle.blocked_until > now))).all():
                    self.learn(key, until)
        wait = self.retry_after(keys, now)
        if wait is not None:
            metrics.throttled.inc(keys[0].guarded.value)
        return wait

    # -- in process ----------------------------------------------------------------------
    def retry_after(self, keys: Iterable[Key], now: datetime) -> int | None:
        """Seconds until all of `keys` may try again (the longest wait); None: they may now."""
        worst = None
        for key in keys:
            name = str(key)
            until = self._blocked.get(name)
            if until is None:
                continue
            wait = retry_after(State(blocked_until=until), now)
            if wait is None:
                del self._blocked[name]
            elif worst is None or wait > worst:
                worst = wait
        return worst

    def learn(self, key: str, until: datetime) -> None:
        current = self._blocked.get(key)
        if current is None or until > current:
            self._blocked[key] = until

    def heard(self, payload: str) -> None:
        """A NOTIFY from a replica that blocked a key."""
        try:
            body = json.loads(payload)
            self.learn(str(body["k"]), datetime.fromisoformat(body["u"]))
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable throttle notification ignored")

    async def load(self, now: datetime, conn: Any = None) -> None:  # noqa: ANN401
        """Learn every block in force (at start, and when the listener connects again)."""
        query = select(Throttle.key, Throttle.blocked_until).where(Throttle.blocked_until > now)
        if conn is None:
            async with db.connection(self.engine) as c:
                rows = (await c.execute(query)).all()
        else:
            rows = [(r["key"], r["blocked_until"]) for r in await conn.fetch(
                "SELECT key, blocked_until FROM throttles WHERE blocked_until > $1", now)]
        for key, until in rows:
            self.learn(key, until)

    # -- in the database -----------------------------------------------------------------
    async def failed(self, keys: list[Key], now: datetime) -> int | None:
        """Count a failed attempt against each key; the wait it now faces, if blocked."""
        dialect = self.engine.dialect.name
        insert = (postgresql if dialect == "postgresql" else sqlite).insert(Throttle)
        blocks: dict[str, datetime] = {}
        async with db.connection(self.engine, begin=True) as conn:
            for key in sorted(keys, key=str):  # one lock order for every replica
                name = str(key)
                await conn.execute(insert.values(key=name, failures=0, strikes=0)
                                   .on_conflict_do_nothing(index_elements=["key"]))
                row = (await conn.execute(
                    select(Throttle.failures, Throttle.window_start, Throttle.strikes,
                           Throttle.blocked_until).where(Throttle.key == name)
                    .with_for_update())).one()
                state = after_failure(State(*row), LIMITS[key.guarded], now)
                await conn.execute(
                    update(Throttle).where(Throttle.key == name)
                    .values(failures=state.failures, window_start=state.window_start,
                            strikes=state.strikes, blocked_until=state.blocked_until))
                if state.blocked_until is not None and state.blocked_until > now:
                    blocks[name] = state.blocked_until
            if dialect == "postgresql":
                for name, until in blocks.items():
                    await conn.execute(text("SELECT pg_notify(:c, :p)"), {
                        "c": CHANNEL, "p": json.dumps({"k": name, "u": until.isoformat()})})
        for name, until in blocks.items():
            self.learn(name, until)
            guarded = name.split(":")[0]
            metrics.throttle_blocks.inc(guarded)
            log.warning("throttled %s until %s", guarded, until.isoformat(),
                        extra={"event": "throttled", "guarded": guarded,
                               "until": until.isoformat()})
        return self.retry_after(keys, now)

    async def prune(self, now: datetime, idle: timedelta) -> int:
        """Forget keys with nothing left to count: no block in force, and nothing failed for
        `idle` (longer than any limit's window and longest block)."""
        async with db.connection(self.engine, begin=True) as conn:
            result = await conn.execute(delete(Throttle).where(
                or_(Throttle.blocked_until.is_(None), Throttle.blocked_until < now - idle),
                or_(Throttle.window_start.is_(None), Throttle.window_start < now - idle)))
        return result.rowcount or 0

    async def succeeded(self, keys: list[Key]) -> None:
        """An account's (or a client's) right secret: its count starts over. Source addresses
        keep theirs: one valid account must not reset a guesser's count for the others."""
        names = [str(k) for k in keys
                 if k.guarded in (Guarded.password_account, Guarded.secret_client)]
        if not names:
            return
        async with db.connection(self.engine, begin=True) as conn:
            await conn.execute(delete(Throttle).where(Throttle.key.in_(names)))
