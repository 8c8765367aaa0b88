"""Is a token active right now? Rules 1-4 and 6 (docs/design.md) as one pure function."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from app.integrations.access import Access, IntegrationFacts, decide
from app.plans.expiry import (
    Period,
    add_period,
    effective_expiry,
    is_expired,
    killed_by_earlier_periods,
)


class TokenKind(StrEnum):
    personal = "personal"
    integration = "integration"
    access = "access"
    refresh = "refresh"


# The stored tokens of `credentials.BEARER_KINDS`: what a token found by its digest must be.
BEARER_TOKEN_KINDS = frozenset({TokenKind.personal, TokenKind.integration, TokenKind.access})


class Inactive(StrEnum):
    revoked = "revoked"
    rotated = "rotated"  # a refresh token already exchanged (RFC 9700 §4.14.2)
    expired = "expired"
    integration_refused = "integration_refused"


class _Facts(NamedTuple):
    kind: str
    issued_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    used_at: datetime | None
    period: Period | None
    integration: IntegrationFacts | None
    installation_state: str | None
    # Rule 4: the plan's cut-off of generation times expired under earlier periods.
    expired_through: datetime | None
    # Rule 1's effective expiry, computed when the facts are made: a check always needs it.
    expiry: datetime | None


class TokenFacts(_Facts):
    """What a check needs to know of a token, immutable (the cache hands the same facts to every
    request). A named tuple: a frozen dataclass, which sets each field through
    `object.__setattr__`, took twice as long to make, for every row of a listing."""

    __slots__ = ()

    def __new__(cls, kind: str, issued_at: datetime, expires_at: datetime | None,
                revoked_at: datetime | None, used_at: datetime | None, period: Period | None,
                integration: IntegrationFacts | None = None,
                installation_state: str | None = None,
                expired_through: datetime | None = None) -> TokenFacts:
        return tuple.__new__(cls, (kind, issued_at, expires_at, revoked_at, used_at, period,
                                   integration, installation_state, expired_through,
                                   effective_expiry(issued_at, expires_at, period)))

    # The named tuple's own copies would carry `expiry` over unchanged (or fail: `__new__`
    # takes the facts, not the expiry): each goes through `__new__`, which computes it anew.
    def __getnewargs__(self) -> tuple:
        return tuple(self)[:-1]

    def _replace(self, **changes: object) -> TokenFacts:
        return TokenFacts(*{**dict(zip(self._fields[:-1], self, strict=False)),
                            **changes}.values())

    @classmethod
    def _make(cls, iterable: object) -> TokenFacts:
        return cls(*iterable)


class Verdict(NamedTuple):
    """`check`'s answer (a named tuple, as `TokenFacts`: one per check and per listed row)."""

    active: bool
    expiry: datetime | None
    reason: Inactive | None = None
    access: Access | None = None


def check(facts: TokenFacts, now: datetime) -> Verdict:
    expiry = facts.expiry
    if facts.revoked_at is not None:
        return Verdict(False, expiry, Inactive.revoked)
    if facts.kind == TokenKind.refresh and facts.used_at is not None:
        return Verdict(False, expiry, Inactive.rotated)
    if is_expired(expiry, now) or killed_by_earlier_periods(facts.issued_at,
                                                            facts.expired_through):
        return Verdict(False, expiry, Inactive.expired)
    if facts.integration is not None:
        access = decide(facts.integration, facts.installation_state, now)
        if not access.allowed:
            return Verdict(False, expiry, Inactive.integration_refused, access)
        return Verdict(True, expiry, access=access)
    return Verdict(True, expiry)


def settled_until(facts: TokenFacts, now: datetime) -> datetime | None:
    """The first instant after `now` at which `check(facts, ...)`, or when an expired token died
    (`plans.expiry.death` under a history whose period in force is `facts.period`), may answer
    otherwise than at `now`; None: never, for as long as the facts stay as they are. Each answer
    changes only when time passes one of the instants the facts name: the effective expiry, the
    token's own lifetime's end and its period's, an integration's review deadline or exception
    date (`integrations.access.decide`). A page of tokens judged at `now` is the same page until
    the earliest of its rows' (`settled_until_all`, `app.tokens.cache.read_listing`)."""
    found = [facts.expiry, facts.expires_at]
    if facts.period is not None:
        found.append(add_period(facts.issued_at, facts.period))
    if (integ := facts.integration) is not None:
        found += [integ.review_deadline, integ.exception_until]
    return first_after(found, now)


def first_after(instants: Iterable[datetime | None], now: datetime) -> datetime | None:
    """The earliest of `instants` after `now` (None: none is)."""
    return min((at for at in instants if at is not None and at > now), default=None)


def settled_until_all(facts: Iterable[TokenFacts], now: datetime) -> datetime | None:
    """`settled_until` of a page of tokens: the earliest of its rows' (None: none changes)."""
    return min((at for f in facts if (at := settled_until(f, now)) is not None), default=None)
