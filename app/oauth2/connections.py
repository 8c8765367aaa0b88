"""Connected apps: the OAuth grants a user authorized, by integration, and their revocation.

A grant is what a user's consent started: an authorization code's tokens and every rotation of
its refresh token (a family). A user's connection to an integration is every live grant of that
user to it; revoking it revokes all their access and refresh tokens of that integration (RFC
7009 §2.1: a refresh token takes its grant with it), and nothing of other users or of the
integration's own installation in the plan.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
from app.auth.principal import Principal
from app.integrations.models import Integration
from app.oauth2 import scopes as catalogue
from app.tokens import cache, repository
from app.tokens.models import Token
from app.tokens.rules import check

# A user authorizes a handful of apps; a grant holds one live refresh token and its access
# tokens. Past this many live tokens the oldest are not read for the list (they stay revocable).
LISTED = 500


@dataclass
class Connection:
    integration_id: uuid.UUID
    client_id: str | None
    name: str
    scopes: list[str] = field(default_factory=list)
    authorized_at: datetime | None = None  # the earliest live grant's consent
    last_used_at: datetime | None = None  # its latest refresh, or the consent
    grants: int = 0  # live grants (refresh-token families)


async def of_user(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> list[Connection]:
    live = [t for t in await repository.list_where(session, user_id=user_id, oauth=True,
                                                   revoked=False, limit=LISTED)
            if check(t.facts, now).active]
    if not live:
        return []
    ids = {t.integration_id for t in live}
    names = dict((await session.execute(
        select(Integration.id, Integration.name).where(Integration.id.in_(ids)))).all())
    used = dict((await session.execute(
        select(Token.family_id, Token.used_at).where(
            Token.user_id == user_id, Token.family_id.in_(
                {t.family_id for t in live if t.family_id is not None}),
            Token.used_at.is_not(None)).order_by(Token.used_at))).all())
    found: dict[uuid.UUID, Connection] = {}
    families: dict[uuid.UUID, set] = {}
    for t in live:
        conn = found.setdefault(t.integration_id, Connection(
            t.integration_id, t.client_id, names.get(t.integration_id, "?")))
        conn.scopes = catalogue.join({*conn.scopes, *t.scopes.split()}).split()
        conn.authorized_at = min(filter(None, (conn.authorized_at, t.issued_at)))
        last = used.get(t.family_id) or t.issued_at
        conn.last_used_at = max(filter(None, (conn.last_used_at, last)))
        families.setdefault(t.integration_id, set()).add(t.family_id or t.id)
    for ident, conn in found.items():
        conn.grants = len(families[ident])
    return sorted(found.values(), key=lambda c: (c.name.lower(), str(c.integration_id)))


async def revoke(session: AsyncSession, principal: Principal, integration_id: uuid.UUID,
                 now: datetime) -> int:
    """Revoke every access and refresh token `principal`'s user holds for the integration;
    the number revoked (0: nothing was connected)."""
    user_id = principal.require_user()
    mine = (Token.user_id == user_id, Token.integration_id == integration_id,
            Token.kind.in_(repository.OAUTH_KINDS), Token.revoked_at.is_(None))
    # Locked first, in one order, so a rotation in flight commits before (and its new token is
    # revoked too) or waits and then finds its token revoked (`app.tokens.batches`).
    ids = list((await session.execute(
        select(Token.id).where(*mine).order_by(Token.id).with_for_update())).scalars())
    if not ids:
        return 0
    families = list((await session.execute(
        select(Token.family_id).where(Token.id.in_(ids), Token.family_id.is_not(None))
        .distinct())).scalars())
    if families:  # rotations committed after the read above
        await session.execute(select(Token.id).where(Token.family_id.in_(families))
                              .order_by(Token.id).with_for_update())
    condition = Token.id.in_(ids)
    if families:
        condition = condition | (Token.family_id.in_(families) & Token.revoked_at.is_(None))
    await session.execute(update(Token).where(condition).values(
        revoked_at=now, revoked_reason="disconnected by the user", revoked_by=principal.actor))
    await cache.changed(session, token_ids=ids, listed=[principal.plan_id])
    for family in families:
        await cache.changed(session, family_id=family, listed=[principal.plan_id])
    await audit.record(session, principal.actor, "integration.disconnected", principal.plan_id,
                       "integration", integration_id, now, tokens=len(ids))
    return len(ids)
