"""Issuing, listing and revoking tokens. Only digests are stored (rule 10)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Uuid, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app import credentials
from app.audit import service as audit
from app.audit.models import AuditEvent
from app.credentials import SecretKind
from app.db import has_only_read, read_alone
from app.errors import NotFound
from app.plans.models import Plan
from app.tokens import cache, repository
from app.tokens.models import Token
from app.tokens.repository import StoredToken
from app.tokens.rules import TokenKind

if TYPE_CHECKING:
    from app.tokens.batches import Batches


def new_row(*, kind: TokenKind, plan_id: uuid.UUID, now: datetime,
            user_id: uuid.UUID | None = None, integration_id: uuid.UUID | None = None,
            scopes: str = "", name: str | None = None, expires_at: datetime | None = None,
            family_id: uuid.UUID | None = None, parent_id: uuid.UUID | None = None,
            created_by: uuid.UUID | None = None,
            authorization_code_id: uuid.UUID | None = None,
            issued_at: datetime | None = None,
            dpop_jkt: str | None = None) -> tuple[dict[str, Any], str]:
    """The column values of a new token row and its secret; only the digest is stored.
    `issued_at`, the original generation time, is `now` unless the token continues a grant
    (a refresh: rule 11)."""
    secret = credentials.generate(SecretKind[kind.value])
    row = {
        "id": uuid.uuid4(), "kind": kind.value, "digest": credentials.digest(secret),
        "hint": credentials.hint(secret), "name": name, "plan_id": plan_id, "user_id": user_id,
        "integration_id": integration_id, "scopes": scopes, "issued_at": issued_at or now,
        "expires_at": expires_at, "family_id": family_id, "parent_id": parent_id,
        "created_by": created_by, "authorization_code_id": authorization_code_id,
        "dpop_jkt": dpop_jkt,
    }
    return row, secret


# One INSERT for any number of rows: a list of parameter sets runs as one executemany. (A
# multi-row `.values([...])` has no compiled-cache key in SQLAlchemy, so it was compiled anew on
# every request: bench/RESULTS.md.)
_INSERT = insert(Token.__table__)
# The plan's policy, as a new token's answer states its expiry (built once).
_PLAN_POLICY = select(*repository.PLAN_POLICY).where(Plan.id == bindparam("plan_id", type_=Uuid))
_INSERT_EVENTS = insert(AuditEvent.__table__)


async def insert_rows(db: AsyncSession | AsyncConnection, rows: list[dict[str, Any]],
                      events: list[dict[str, Any]] | tuple = ()) -> None:
    """Insert new token rows (from `new_row`) and their audit events (`audit.row`): Core, no
    ORM unit of work."""
    await db.execute(_INSERT, rows if len(rows) > 1 else rows[0])
    if events:
        await db.execute(_INSERT_EVENTS, list(events) if len(events) > 1 else events[0])


def issue(session: AsyncSession, *, kind: TokenKind, plan_id: uuid.UUID, now: datetime,
          user_id: uuid.UUID | None = None, integration_id: uuid.UUID | None = None,
          scopes: str = "", name: str | None = None, expires_at: datetime | None = None,
          family_id: uuid.UUID | None = None, parent_id: uuid.UUID | None = None,
          created_by: uuid.UUID | None = None,
          authorization_code_id: uuid.UUID | None = None) -> tuple[Token, str]:
    """A new token row and its secret; the caller shows the secret once."""
    row, secret = new_row(
        kind=kind, plan_id=plan_id, now=now, user_id=user_id, integration_id=integration_id,
        scopes=scopes, name=name, expires_at=expires_at, family_id=family_id,
        parent_id=parent_id, created_by=created_by,
        authorization_code_id=authorization_code_id)
    token = Token(**row)
    session.add(token)
    return token, secret


async def create_personal(session: AsyncSession, batches: Batches, *, plan_id: uuid.UUID,
                          user_id: uuid.UUID, name: str | None, now: datetime,
                          via: str, policy: tuple[Any, ...] | None = None,
                          ) -> tuple[StoredToken, str]:
    """A new personal token of `user_id`, as checks see it once stored, and its secret (shown
    once).

    The request's session has only read (who is asking); it reads the plan's period, then gives
    its connection back, and the row joins the group commit of concurrent writes
    (`batches.TokenWriter`): a request waiting on a batch must hold no pool connection the batch
    may need. The answer is built from the row, not read back: once the row is committed,
    nothing can fail the request and leave a token nobody was shown. Its audit events (the
    creation, and the sign-in when `via` is the password) are written with the row.

    `policy`: the plan's policy (the values of `repository.PLAN_POLICY`) when the caller has
    it already: the facts its own token was just checked by (`repository.policy_of`), as
    fresh as any check's. It only says when the new token will expire in the answer; every
    check of the token reads the policy in force then."""
    if not has_only_read(session):
        raise RuntimeError("create_personal needs a session that has only read")
    if policy is None:
        found = await read_alone(session, _PLAN_POLICY, {"plan_id": plan_id})
        policy = found[0] if found else None
        if policy is None:
            raise NotFound("no such plan")
    row, secret = new_row(kind=TokenKind.personal, plan_id=plan_id, user_id=user_id, name=name,
                          now=now, created_by=user_id)
    actor = f"user:{user_id}"
    events = [audit.row(actor, "token.created", plan_id, "token", row["id"], now,
                        kind="personal", name=name, via=via)]
    if via == "password":
        events.insert(0, audit.row(actor, "user.signed_in", plan_id, "user", user_id, now,
                                   via="basic"))
    await session.close()
    await batches.writer.write([row], events=events)
    return repository.of_new_row(row, *policy), secret


async def get_in_plan(session: AsyncSession, plan_id: uuid.UUID, token_id: uuid.UUID,
                      *, user_id: uuid.UUID | None = None) -> StoredToken:
    stored = await repository.find_by_id(session, token_id)
    if stored is None or stored.plan_id != plan_id or (user_id and stored.user_id != user_id):
        raise NotFound("no such token")
    return stored


async def revoke(session: AsyncSession, stored: StoredToken, *, actor: str, reason: str,
                 now: datetime, action: str = "token.revoked") -> bool:
    """Revoke a token. A refresh token takes its whole grant (family) with it (RFC 7009 §2.1).
    `action` names the audit event (`token.replayed` for a refresh token's reuse). True when
    this call revoked it (False: it was revoked already)."""
    condition = Token.id == stored.id
    family_id = None
    if stored.kind == TokenKind.refresh and stored.family_id is not None:
        condition = or_(condition, Token.family_id == stored.family_id)
        family_id = stored.family_id
        # Lock the grant's rows first (waiting for a rotation in flight to commit), so that the
        # UPDATE, a statement later, sees the rows that rotation added; a later rotation waits
        # on these locks and then finds its token revoked (`batches`, rotations).
        await session.execute(select(Token.id).where(Token.family_id == family_id)
                              .order_by(Token.id).with_for_update())
    changed = await session.execute(
        update(Token).where(condition, Token.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason, revoked_by=actor)
    )
    if not changed.rowcount and action == "token.revoked":
        # Revoked already (by this request's twin, or earlier): the answer is the same, but
        # nothing happened, so nothing is recorded or announced. (A replay is recorded
        # whatever it found: it is an attack's trace.)
        return False
    await cache.changed(session, token_ids=[stored.id], family_id=family_id,
                        listed=[stored.plan_id])
    await audit.record(session, actor, action, stored.plan_id, "token", stored.id, now,
                       reason=reason, kind=stored.kind, family_id=family_id and str(family_id))
    return bool(changed.rowcount)
