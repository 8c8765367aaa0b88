"""Token storage. The check path is one indexed query joining plan, integration, installation."""

from __future__ import annotations

import functools
import uuid
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Integer, Select, Uuid, and_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db import for_many, of_dialect, rows
from app.integrations.access import IntegrationFacts
from app.integrations.models import Installation, Integration
from app.plans.expiry import plan_period
from app.plans.models import Plan
from app.tokens.models import Token
from app.tokens.rules import TokenFacts, TokenKind


class StoredToken(NamedTuple):
    """What a check needs to know of a token, read in one round trip. Immutable (the cache
    hands the same one to every request); a named tuple, made in C: a frozen dataclass of
    these eighteen fields took 1.8 µs to make, six times as long, for every row of a listing."""

    id: uuid.UUID
    kind: str
    plan_id: uuid.UUID
    user_id: uuid.UUID | None
    integration_id: uuid.UUID | None
    client_id: str | None
    scopes: str
    issued_at: datetime
    name: str | None
    hint: str
    revoked_at: datetime | None
    revoked_reason: str | None
    revoked_by: str | None
    family_id: uuid.UUID | None
    facts: TokenFacts
    expires_at: datetime | None = None  # its own lifetime's end (OAuth access tokens)
    period_since: datetime | None = None  # when the plan's period in force was set
    jkt: str | None = None  # DPoP: the thumbprint of the key it is bound to (RFC 9449 §6)


# What a check reads of the token's plan: its period, since when, and its cut-off of generation
# times expired under earlier periods (rule 4).
PLAN_POLICY = (Plan.expiration_value, Plan.expiration_unit, Plan.policy_updated_at,
               Plan.expired_through)


def policy_of(stored: StoredToken) -> tuple[Any, ...]:
    """The values of `PLAN_POLICY` a token's facts were read with: its plan's policy."""
    period = stored.facts.period
    return (period.value if period else None, period.unit.value if period else None,
            stored.period_since, stored.facts.expired_through)


_CHECK_COLUMNS = (
    Token.id, Token.kind, Token.plan_id, Token.user_id, Token.integration_id, Token.scopes,
    Token.issued_at, Token.expires_at, Token.revoked_at, Token.used_at,
    *PLAN_POLICY,
    Integration.client_id, Integration.kind, Integration.review_status,
    Integration.review_deadline, Integration.exception_until, Integration.data_access,
    Integration.judged_third_party_at, Installation.state,
    Token.name, Token.hint, Token.revoked_reason, Token.revoked_by, Token.family_id,
    Token.dpop_jkt,
)

_CHECK_QUERY = (
    select(*_CHECK_COLUMNS)
    .join(Plan, Plan.id == Token.plan_id)
    .outerjoin(Integration, Integration.id == Token.integration_id)
    .outerjoin(
        Installation,
        and_(Installation.integration_id == Token.integration_id,
             Installation.plan_id == Token.plan_id),
    )
)


def _stored(row: tuple) -> StoredToken:
    (tid, kind, plan_id, user_id, integration_id, scopes, issued_at, expires_at, revoked_at,
     used_at, p_value, p_unit, p_since, expired_through, client_id, i_kind, review_status,
     review_deadline, exception_until, data_access, judged_at, inst_state, name, hint,
     revoked_reason, revoked_by, family_id, jkt) = row
    integration = None
    if integration_id is not None:
        integration = IntegrationFacts(
            kind=i_kind, review_status=review_status, review_deadline=review_deadline,
            exception_until=exception_until, data_access=data_access,
            judged_third_party=judged_at is not None,
        )
    facts = TokenFacts(
        kind=kind, issued_at=issued_at, expires_at=expires_at, revoked_at=revoked_at,
        used_at=used_at, period=plan_period(p_value, p_unit), integration=integration,
        installation_state=inst_state, expired_through=expired_through,
    )
    return StoredToken(tid, kind, plan_id, user_id, integration_id, client_id, scopes,
                       issued_at, name, hint, revoked_at, revoked_reason, revoked_by, family_id,
                       facts, expires_at, p_since, jkt)


def of_new_row(row: dict[str, Any], *policy: Any) -> StoredToken:  # noqa: ANN401
    """A token just written from `row` (`tokens.service.new_row`), as a lookup would read it,
    given its plan's policy (the values of `PLAN_POLICY`): for a token of no integration (a
    personal token), whose facts are all in its row and its plan. Built column by column of
    the lookup's own query."""
    if row["integration_id"] is not None:
        raise ValueError("an integration's token is read back, not built")
    known = {Token: row, Plan: {c.key: v for c, v in zip(PLAN_POLICY, policy, strict=True)}}
    return _stored(tuple(known.get(c.class_, {}).get(c.key) for c in _CHECK_COLUMNS))


# The check query by digest, built once with a bound parameter: a call then costs neither
# statement construction nor the computation of its compiled-cache key (bench/RESULTS.md).
_BY_DIGEST = _CHECK_QUERY.where(Token.digest == bindparam("digest"))


async def find_by_digest(db: AsyncSession | AsyncConnection, digest: str) -> StoredToken | None:
    """The hot-path lookup, on a session or (for one-statement reads) a bare connection."""
    row = (await db.execute(_BY_DIGEST, {"digest": digest})).first()
    return _stored(tuple(row)) if row is not None else None


# The same for many digests at once (`app/tokens/batches.py`): the digest comes back last.
_BY_DIGESTS = for_many(_CHECK_QUERY.add_columns(Token.digest), Token.digest)


async def find_by_digests(conn: AsyncConnection, digests: list[str]) -> dict[str, StoredToken]:
    query = of_dialect(_BY_DIGESTS, conn.dialect.name)
    rows = (await conn.execute(query, {"keys": digests})).all()
    return {row[-1]: _stored(tuple(row)[:-1]) for row in rows}


async def find_by_id(session: AsyncSession, token_id: uuid.UUID) -> StoredToken | None:
    row = (await session.execute(_CHECK_QUERY.where(Token.id == token_id))).first()
    return _stored(tuple(row)) if row is not None else None


# The kinds of token the OAuth endpoints issue (an integration's grants, as opposed to personal
# and integration tokens).
OAUTH_KINDS = (TokenKind.access.value, TokenKind.refresh.value)

# A listing's filters, each a condition with its value as a parameter: the statement of a set
# of filters is built and compiled once (`_listing`), not per request (building and adapting a
# statement of 28 columns was a third of a page of tokens' CPU).
_FILTERS = {
    "plan_id": (Token.plan_id == bindparam("plan_id", type_=Uuid),),
    "user_id": (Token.user_id == bindparam("user_id", type_=Uuid),),
    "kind": (Token.kind == bindparam("kind", type_=Token.kind.type),),
    "oauth": (Token.kind.in_(OAUTH_KINDS), Token.integration_id.is_not(None)),
    "revoked": (Token.revoked_at.is_not(None),),
    "unrevoked": (Token.revoked_at.is_(None),),
}


@functools.cache
def _listing(filters: frozenset[str]) -> Select[Any]:
    return (_CHECK_QUERY.where(*(c for name in sorted(filters) for c in _FILTERS[name]))
            # Both descending: a backward walk of the (plan_id, issued_at, id) or (user_id, kind,
            # issued_at, id) index gives the page in order, however many tokens share an instant.
            .order_by(Token.issued_at.desc(), Token.id.desc())
            .limit(bindparam("limit", type_=Integer)).offset(bindparam("offset", type_=Integer)))


async def list_where(session: AsyncSession, *, plan_id: uuid.UUID | None = None,
                     user_id: uuid.UUID | None = None, kind: str | None = None,
                     oauth: bool = False, revoked: bool | None = None, limit: int = 100,
                     offset: int = 0) -> list[StoredToken]:
    """Tokens newest first, a page at a time: of a plan, a user, a kind, OAuth tokens of an
    integration only (`oauth`), revoked or not (`revoked`), as given."""
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    for name, value in (("plan_id", plan_id), ("user_id", user_id), ("kind", kind)):
        if value is not None:
            params[name] = value
    filters = set(params) - {"limit", "offset"}
    if oauth:
        filters.add("oauth")
    if revoked is not None:
        filters.add("revoked" if revoked else "unrevoked")
    query = _listing(frozenset(filters))
    return [_stored(tuple(row)) for row in await rows(session, query, params)]
