"""The token endpoint's grants (RFC 6749 §4.1.3, §4.4, §6), async and framework-free.

Authlib's server classes are synchronous; we use its error classes (each carries its RFC error
code, status and headers) and its PKCE helper, and keep the grants here so the event loop never
blocks. Choices follow OAuth 2.1 / RFC 9700: PKCE S256 for every client, refresh tokens rotate
with reuse detection, codes are single-use and their reuse revokes what they produced.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from authlib.oauth2.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import credentials
from app.config import Settings
from app.credentials import SecretKind
from app.integrations.access import Access, decide
from app.integrations.models import Installation, Integration
from app.integrations.service import facts_of
from app.oauth2 import scopes as catalogue
from app.oauth2.clients import ClientFacts
from app.oauth2.models import AuthorizationCode
from app.plans.expiry import Period, effective_expiry, is_expired, plan_period
from app.plans.models import Plan
from app.tokens import cache, repository
from app.tokens import service as tokens
from app.tokens.batches import Batches
from app.tokens.cache import TokenCache
from app.tokens.models import Token
from app.tokens.rules import Inactive, TokenKind, check

_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")  # RFC 7636 §4.1


@dataclass(frozen=True, slots=True)
class Issued:
    access_token: str
    expires_in: int
    scope: str
    refresh_token: str | None = None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"access_token": self.access_token, "token_type": "Bearer",
                               "expires_in": self.expires_in, "scope": self.scope}
        if self.refresh_token:
            out["refresh_token"] = self.refresh_token
        return out


async def persist_before_refusing(session: AsyncSession) -> None:
    """A security reaction (revoking a replayed grant) must outlive the error response, which
    otherwise rolls the request's transaction back."""
    await session.commit()


# The installation's state and the plan's period in one round trip (statements built once).
_IN_PLAN = (
    select(Installation.state, Plan.expiration_value, Plan.expiration_unit)
    .select_from(Plan)
    .outerjoin(Installation, and_(Installation.plan_id == Plan.id,
                                  Installation.integration_id == bindparam("integration_id")))
    .where(Plan.id == bindparam("plan_id"))
)
_INSTALLED = (
    select(Installation.plan_id, Installation.state, Plan.expiration_value,
           Plan.expiration_unit)
    .join(Plan, Plan.id == Installation.plan_id)
    .where(Installation.integration_id == bindparam("integration_id"))
)


async def _placement(session: AsyncSession, tcache: TokenCache | None, integ: Integration,
                     plan_id: uuid.UUID | None) -> tuple:
    """The integration's installation state and the plan's period in `plan_id` (a row of
    `_IN_PLAN`), or, for `plan_id` None, every plan it is installed in (rows of `_INSTALLED`):
    from the token cache when it has them (an installation or period change evicts them)."""
    facts = tcache.get_placement(integ.id, plan_id) if tcache is not None else None
    if facts is not None:
        return facts
    generation = tcache.generation if tcache is not None else 0
    if plan_id is None:
        facts = tuple(tuple(r) for r in (await session.execute(
            _INSTALLED, {"integration_id": integ.id})).all())
    else:
        row = (await session.execute(
            _IN_PLAN, {"integration_id": integ.id, "plan_id": plan_id})).first()
        facts = tuple(row) if row is not None else (None, None, None)
    if tcache is not None:
        tcache.put_placement(integ.id, plan_id, facts, generation)
    return facts


async def access_in_plan(session: AsyncSession, integ: Integration | ClientFacts,
                         plan_id: uuid.UUID, now: datetime,
                         tcache: TokenCache | None = None) -> tuple[Access, Period | None]:
    """Rule 6 for the integration in the plan, and the plan's token period (rule 1)."""
    state, value, unit = await _placement(session, tcache, integ, plan_id)
    return decide(facts_of(integ), state, now), plan_period(value, unit)


def refuse(access: Access) -> UnauthorizedClientError:
    """Rule 6 at the token endpoint: the description names the rule and any deadline."""
    text = f"{access.rule}: {access.describe()}"
    if access.deadline is not None:
        text += f" (deadline {access.deadline.isoformat()})"
    return UnauthorizedClientError(description=text)


def narrow_scope(requested: str | None, allowed: list[str]) -> list[str]:
    """§3.3: the requested scope, which must lie within `allowed`; absent means all allowed."""
    if requested is None:
        return list(allowed)
    wanted = catalogue.parse(requested)
    if not wanted or any(s not in allowed for s in wanted):
        raise InvalidScopeError(description="the requested scope exceeds what was granted")
    return wanted


def _mint(settings: Settings, *, integ: Integration | ClientFacts, plan_id: uuid.UUID,
          period: Period | None, user_id: uuid.UUID | None, scopes: list[str], now: datetime,
          family_id: uuid.UUID | None, with_refresh: bool, parent_id: uuid.UUID | None = None,
          code_id: uuid.UUID | None = None) -> tuple[list[dict[str, Any]], Issued]:
    """The rows to write and the answer to give, once they are written. The caller has decided
    rule 6 at `now`; `period` is the plan's (read with it)."""
    scope = catalogue.join(scopes)
    expires_at = now + timedelta(seconds=settings.access_token_ttl_seconds)
    # The plan's period may end the access token sooner than its own lifetime (rule 1).
    expiry = effective_expiry(now, expires_at, period)
    if expiry is None or is_expired(expiry, now):
        raise InvalidGrantError(description="the plan's token expiration period leaves no "
                                            "lifetime for a new token")
    common = {"plan_id": plan_id, "user_id": user_id, "integration_id": integ.id,
              "scopes": scope, "now": now, "family_id": family_id, "parent_id": parent_id,
              "authorization_code_id": code_id}
    access_row, access_secret = tokens.new_row(kind=TokenKind.access, expires_at=expires_at,
                                               **common)
    rows = [access_row]
    refresh_secret = None
    if with_refresh:
        refresh_row, refresh_secret = tokens.new_row(kind=TokenKind.refresh, **common)
        rows.append(refresh_row)
    expires_in = int((expiry - now).total_seconds())
    return rows, Issued(access_secret, expires_in, scope, refresh_secret)


async def authorization_code(session: AsyncSession, settings: Settings,
                             integ: Integration | ClientFacts, form: dict[str, str],
                             now: datetime, *, tcache: TokenCache | None = None,
                             batches: Batches | None = None) -> Issued:
    code = form.get("code")
    verifier = form.get("code_verifier")
    if not code:
        raise InvalidRequestError(description="the 'code' parameter is required")
    if not verifier:
        raise InvalidRequestError(description="the 'code_verifier' parameter is required (PKCE)")
    if not _VERIFIER.match(verifier):
        raise InvalidRequestError(description="the code_verifier is malformed (RFC 7636 §4.1)")
    row = None
    if credentials.kind_of(code) is SecretKind.code:
        row = (await session.execute(
            select(AuthorizationCode).where(AuthorizationCode.digest == credentials.digest(code))
        )).scalar_one_or_none()
    if row is None or row.integration_id != integ.id:
        raise InvalidGrantError(description="the authorization code is invalid")
    if row.used_at is not None:
        await _revoke_code_grant(session, row, now)
        await persist_before_refusing(session)
        raise InvalidGrantError(description="the authorization code was already used; the "
                                            "tokens issued from it are revoked")
    if now >= row.expires_at:
        raise InvalidGrantError(description="the authorization code has expired")
    if form.get("redirect_uri", row.redirect_uri) != row.redirect_uri:
        raise InvalidGrantError(description="redirect_uri does not match the authorization "
                                            "request")
    if create_s256_code_challenge(verifier) != row.code_challenge:
        raise InvalidGrantError(description="the code_verifier does not match the challenge")
    # Single use, also against a concurrent redemption of the same code.
    claimed = await session.execute(
        update(AuthorizationCode).where(AuthorizationCode.id == row.id,
                                        AuthorizationCode.used_at.is_(None))
        .values(used_at=now))
    if claimed.rowcount != 1:
        raise InvalidGrantError(description="the authorization code was already used")
    access, period = await access_in_plan(session, integ, row.plan_id, now, tcache)
    if not access.allowed:
        raise refuse(access)
    rows, issued = _mint(settings, integ=integ, plan_id=row.plan_id, period=period,
                         user_id=row.user_id, scopes=row.scopes.split(), now=now,
                         family_id=uuid.uuid4(), with_refresh=True, code_id=row.id)
    await tokens.insert_rows(session, rows)
    return issued


async def _revoke_code_grant(session: AsyncSession, row: AuthorizationCode,
                             now: datetime) -> None:
    """RFC 6749 §4.1.2 / RFC 9700 §4.2.4: a replayed code revokes every token it produced."""
    families = select(Token.family_id).where(Token.authorization_code_id == row.id)
    ids = (await session.execute(
        select(Token.id).where(Token.family_id.in_(families), Token.revoked_at.is_(None))
    )).scalars().all()
    if ids:
        await session.execute(
            update(Token).where(Token.id.in_(ids))
            .values(revoked_at=now, revoked_reason="authorization code replayed",
                    revoked_by="system"))
        await cache.changed(session, token_ids=list(ids))


async def refresh_token(session: AsyncSession, settings: Settings,
                        integ: Integration | ClientFacts, form: dict[str, str],
                        now: datetime, *, tcache: TokenCache | None = None,
                        batches: Batches | None = None) -> Issued:
    secret = form.get("refresh_token")
    if not secret:
        raise InvalidRequestError(description="the 'refresh_token' parameter is required")
    # Client and plan facts came from the cache: the lookup and the write join those of
    # concurrent requests (app/tokens/batches.py).
    fast = batches is not None and not session.in_transaction()
    stored = None
    if credentials.kind_of(secret) is SecretKind.refresh:
        digest = credentials.digest(secret)
        stored = await (batches.reader.find(digest) if fast
                        else repository.find_by_digest(session, digest))
    if stored is None or stored.integration_id != integ.id or stored.kind != TokenKind.refresh:
        raise InvalidGrantError(description="the refresh token is invalid")
    verdict = check(stored.facts, now)
    if verdict.reason is Inactive.rotated:
        # Reuse of a rotated refresh token: someone holds a copy. Revoke the whole family.
        await tokens.revoke(session, stored, actor="system",
                            reason="refresh token reuse detected", now=now)
        await persist_before_refusing(session)
        raise InvalidGrantError(description="the refresh token was already used; its grant is "
                                            "revoked")
    if verdict.reason is Inactive.integration_refused and verdict.access is not None:
        raise refuse(verdict.access)
    if not verdict.active:
        raise InvalidGrantError(description=f"the refresh token is {verdict.reason}")
    scopes = narrow_scope(form.get("scope"), stored.scopes.split())
    rows, issued = _mint(settings, integ=integ, plan_id=stored.plan_id,
                         period=stored.facts.period, user_id=stored.user_id, scopes=scopes,
                         now=now, family_id=stored.family_id, with_refresh=True,
                         parent_id=stored.id)
    if fast:
        rotated = await batches.writer.write(rows, rotate=stored.id, at=now)
    else:
        rotated = (await session.execute(
            update(Token).where(Token.id == stored.id, Token.used_at.is_(None),
                                Token.revoked_at.is_(None))
            .values(used_at=now))).rowcount == 1
        if rotated:
            await cache.changed(session, token_ids=[stored.id])
            await tokens.insert_rows(session, rows)
    if not rotated:  # a concurrent exchange of the same token won
        raise InvalidGrantError(description="the refresh token was already used")
    return issued


async def client_credentials(session: AsyncSession, settings: Settings,
                             integ: Integration | ClientFacts, form: dict[str, str],
                             now: datetime, *, tcache: TokenCache | None = None,
                             batches: Batches | None = None) -> Issued:
    """§4.4: the integration acts for a plan: its own (custom) or one it is installed in."""
    if not integ.confidential:
        raise UnauthorizedClientError(description="public clients may not use "
                                                  "client_credentials")
    plan_id = integ.plan_id
    if plan_id is None:
        installed = await _placement(session, tcache, integ, None)
        wanted = form.get("plan_id")
        found = None
        if wanted:
            found = next((r for r in installed if str(r[0]) == wanted), None)
        elif len(installed) == 1:
            found = installed[0]
        if found is None:
            raise UnauthorizedClientError(
                description="the integration is not installed in the plan; name one installed "
                            "plan with 'plan_id'" if installed or wanted else
                "the integration is not installed in any plan")
        plan_id, state, value, unit = found
        access = decide(facts_of(integ), state, now)
        period = plan_period(value, unit)
    else:
        access, period = await access_in_plan(session, integ, plan_id, now, tcache)
    if not access.allowed:
        raise refuse(access)
    scopes = narrow_scope(form.get("scope"), list(integ.scopes))
    rows, issued = _mint(settings, integ=integ, plan_id=plan_id, period=period, user_id=None,
                         scopes=scopes, now=now, family_id=None,
                         with_refresh=False)  # §4.4.3: no refresh token for client credentials
    if batches is None or session.in_transaction():
        await tokens.insert_rows(session, rows)
    else:
        # Everything came from the cache and the grant only writes its row: it joins the rows
        # of concurrent requests in one committed INSERT (group commit, app/tokens/batches.py).
        await batches.writer.write(rows)
    return issued
