"""The token endpoint's grants (RFC 6749 §4.1.3, §4.4, §6), async and framework-free.

Authlib's server classes are synchronous; we use its error classes (each carries its RFC error
code, status and headers) and its PKCE helper, and keep the grants here so the event loop never
blocks. Choices follow OAuth 2.1 / RFC 9700: PKCE S256 for every client, refresh tokens rotate
with reuse detection, codes are single-use and their reuse revokes what they produced.
"""

from __future__ import annotations

import logging
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
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import credentials
from app.audit import service as audit
from app.config import Settings
from app.credentials import SecretKind
from app.db import persist_before_refusing
from app.integrations import placement as placements
from app.integrations.access import Access, decide
from app.integrations.models import Integration
from app.integrations.placement import Placement
from app.integrations.service import facts_of
from app.oauth2 import callers, dpop
from app.oauth2 import scopes as catalogue
from app.oauth2.clients import ClientFacts
from app.oauth2.models import AuthorizationCode
from app.plans.expiry import Period, effective_expiry, is_expired
from app.tokens import cache, repository
from app.tokens import service as tokens
from app.tokens.batches import Batches
from app.tokens.cache import TokenCache
from app.tokens.models import Token
from app.tokens.repository import StoredToken
from app.tokens.rules import Inactive, TokenKind, check

log = logging.getLogger("tessera.oauth2")
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")  # RFC 7636 §4.1


@dataclass(frozen=True, slots=True)
class Issued:
    access_token: str
    expires_in: int
    scope: str
    refresh_token: str | None = None
    token_type: str = "Bearer"  # "DPoP" when bound to a key (RFC 9449 §5)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"access_token": self.access_token, "token_type": self.token_type,
                               "expires_in": self.expires_in, "scope": self.scope}
        if self.refresh_token:
            out["refresh_token"] = self.refresh_token
        return out


async def access_in_plan(session: AsyncSession, integ: Integration | ClientFacts,
                         plan_id: uuid.UUID, now: datetime,
                         tcache: TokenCache | None = None) -> tuple[Access, Placement]:
    """Rule 6 for the integration in the plan, and where it stands there: the installation's
    approved scopes and the plan's token period (rule 1)."""
    found = await placements.in_plan(session, tcache, integ.id, plan_id) \
        or Placement(plan_id, None, (), None)
    return decide(facts_of(integ), found.state, now), found


def grantable(integ: Integration | ClientFacts, found: Placement) -> list[str]:
    """Rule 11: what the integration may get for the plan, its registered scopes within those a
    plan admin approved for its installation there."""
    return [s for s in integ.scopes if s in found.approved_scopes]


def narrow_scope(requested: str | None, allowed: list[str]) -> list[str]:
    """§3.3: the requested scope, which must lie within `allowed`; absent means all allowed."""
    if requested is None:
        return list(allowed)
    wanted = catalogue.parse(requested)
    if not wanted or any(s not in allowed for s in wanted):
        raise InvalidScopeError(description="the requested scope exceeds what was granted")
    return wanted


@dataclass(frozen=True, slots=True)
class Minted:
    """What a grant writes (token rows and their audit event) and answers once written."""

    rows: list[dict[str, Any]]
    events: list[dict[str, Any]]
    issued: Issued


def _mint(settings: Settings, *, grant: str, integ: Integration | ClientFacts,
          plan_id: uuid.UUID, period: Period | None, user_id: uuid.UUID | None,
          scopes: list[str], now: datetime, family_id: uuid.UUID | None, with_refresh: bool,
          parent_id: uuid.UUID | None = None, code_id: uuid.UUID | None = None,
          origin: datetime | None = None, jkt: str | None = None,
          refresh_jkt: str | None = None) -> Minted:
    """The rows to write and the answer to give, once they are written. The caller has decided
    rule 6 at `now`; `period` is the plan's (read with it). `origin`: the original generation
    time of the grant a refresh continues, which the new pair keeps, so that the plan's period
    bounds the grant as a whole and no refresh outlives its parent (rule 11). `jkt`: the
    DPoP key the access token is bound to; `refresh_jkt`, the refresh token's (a public
    client's, RFC 9449 §5)."""
    scope = catalogue.join(scopes)
    issued_at = origin or now
    expires_at = now + timedelta(seconds=settings.access_token_ttl_seconds)
    # The plan's period may end the access token sooner than its own lifetime (rule 1).
    expiry = effective_expiry(issued_at, expires_at, period)
    if expiry is None or is_expired(expiry, now):
        raise InvalidGrantError(description="the plan's token expiration period leaves no "
                                            "lifetime for a new token")
    common = {"plan_id": plan_id, "user_id": user_id, "integration_id": integ.id,
              "scopes": scope, "now": now, "family_id": family_id, "parent_id": parent_id,
              "authorization_code_id": code_id, "issued_at": issued_at}
    access_row, access_secret = tokens.new_row(kind=TokenKind.access, expires_at=expires_at,
                                               dpop_jkt=jkt, **common)
    rows = [access_row]
    refresh_secret = None
    if with_refresh:
        refresh_row, refresh_secret = tokens.new_row(kind=TokenKind.refresh,
                                                     dpop_jkt=refresh_jkt, **common)
        rows.append(refresh_row)
    event = audit.row(
        f"integration:{integ.id}", "token.issued", plan_id, "token", access_row["id"], now,
        grant=grant, client_id=integ.client_id, scopes=scope,
        user_id=str(user_id) if user_id else None,
        refresh_token_id=str(rows[1]["id"]) if with_refresh else None,
        rotated=str(parent_id) if parent_id else None, dpop_jkt=jkt)
    expires_in = int((expiry - now).total_seconds())
    return Minted(rows, [event], Issued(access_secret, expires_in, scope, refresh_secret,
                                        "DPoP" if jkt else "Bearer"))


def bound_key(integ: Integration | ClientFacts, proof: dpop.Proof | None) -> str | None:
    """The key a new access token is bound to: the proof's, if the request carried one; a
    client registered with `dpop_bound_access_tokens` must send one (RFC 9449 §5.2)."""
    if proof is None and getattr(integ, "dpop_bound_access_tokens", False):
        raise dpop.InvalidDPoPProof(description="this client's access tokens are DPoP-bound: "
                                                "a DPoP proof is required")
    return proof.jkt if proof is not None else None


async def authorization_code(session: AsyncSession, settings: Settings,
                             integ: Integration | ClientFacts, form: dict[str, str],
                             now: datetime, *, tcache: TokenCache | None = None,
                             batches: Batches | None = None,
                             proof: dpop.Proof | None = None) -> Issued:
    code = form.get("code")
    verifier = form.get("code_verifier")
    if not code:
        raise InvalidRequestError(description="the 'code' parameter is required")
    if not verifier:
        raise InvalidRequestError(description="the 'code_verifier' parameter is required (PKCE)")
    if not _VERIFIER.match(verifier):
        raise InvalidRequestError(description="the code_verifier is malformed (RFC 7636, "
                                              "section 4.1)")
    row = None
    if credentials.kind_of(code) is SecretKind.code:
        row = (await session.execute(
            select(AuthorizationCode).where(AuthorizationCode.digest == credentials.digest(code))
        )).scalar_one_or_none()
    if row is None or row.integration_id != integ.id:
        raise InvalidGrantError(description="the authorization code is invalid")
    if row.used_at is not None:
        raise await _code_replayed(session, row, integ, now)
    if now >= row.expires_at:
        raise InvalidGrantError(description="the authorization code has expired")
    redirect_uri = form.get("redirect_uri")
    if redirect_uri is None and row.redirect_uri_sent:
        # (Authlib refuses descriptions outside RFC 6749 §5.2's characters: ASCII only.)
        raise InvalidRequestError(description="the 'redirect_uri' parameter is required: the "
                                              "authorization request carried one (RFC 6749, "
                                              "section 4.1.3)")
    if redirect_uri is not None and redirect_uri != row.redirect_uri:
        raise InvalidGrantError(description="redirect_uri does not match the authorization "
                                            "request")
    if create_s256_code_challenge(verifier) != row.code_challenge:
        raise InvalidGrantError(description="the code_verifier does not match the challenge")
    if row.dpop_jkt is not None and (proof is None or proof.jkt != row.dpop_jkt):
        # RFC 9449 §10: the authorization request named the key the code is redeemed with.
        raise dpop.InvalidDPoPProof(description="the code is bound to the key the "
                                                "authorization request named (dpop_jkt)")
    jkt = bound_key(integ, proof)
    # Single use, also against a concurrent redemption of the same code: the loser's UPDATE
    # waits for the winner's transaction, then finds the code used, and treats it as the
    # replay it is.
    claimed = await session.execute(
        update(AuthorizationCode).where(AuthorizationCode.id == row.id,
                                        AuthorizationCode.used_at.is_(None))
        .values(used_at=now))
    if claimed.rowcount != 1:
        raise await _code_replayed(session, row, integ, now)
    access, found = await access_in_plan(session, integ, row.plan_id, now, tcache)
    if not access.allowed:
        raise callers.refused(access)
    scopes = row.scopes.split()
    if any(s not in grantable(integ, found) for s in scopes):
        # The installation's approved scopes can only have narrowed since the consent (a new
        # installation): the code asks for more than the plan now allows.
        raise InvalidScopeError(description="the authorized scope exceeds what a plan admin "
                                            "approved for this integration")
    minted = _mint(settings, grant="authorization_code", integ=integ, plan_id=row.plan_id,
                   period=found.period, user_id=row.user_id, scopes=scopes, now=now,
                   family_id=uuid.uuid4(), with_refresh=True, code_id=row.id, jkt=jkt,
                   refresh_jkt=None if integ.confidential else jkt)
    await tokens.insert_rows(session, minted.rows, minted.events)
    return minted.issued


async def _code_replayed(session: AsyncSession, row: AuthorizationCode,
                         integ: Integration | ClientFacts, now: datetime) -> InvalidGrantError:
    """RFC 6749 §4.1.2 / RFC 9700 §4.2.4: a code presented again, one after the other or at
    the same time, revokes every token it produced; the revocation and its audit event are
    committed before the refusal is answered."""
    families = select(Token.family_id).where(Token.authorization_code_id == row.id)
    ids = (await session.execute(
        select(Token.id).where(Token.family_id.in_(families), Token.revoked_at.is_(None))
    )).scalars().all()
    if ids:
        await session.execute(
            update(Token).where(Token.id.in_(ids))
            .values(revoked_at=now, revoked_reason="authorization code replayed",
                    revoked_by="system"))
        await cache.changed(session, token_ids=list(ids), listed=[row.plan_id])
    log.warning("authorization code replayed", extra={
        "event": "code_replayed", "client_id": integ.client_id, "plan_id": str(row.plan_id),
        "revoked_tokens": len(ids)})
    await audit.record(session, f"integration:{integ.id}", "authorization_code.replayed",
                       row.plan_id, "authorization_code", row.id, now,
                       client_id=integ.client_id, revoked_tokens=len(ids))
    await persist_before_refusing(session)
    return InvalidGrantError(description="the authorization code was already used; the "
                                         "tokens issued from it are revoked")


async def _refresh_replayed(session: AsyncSession, batches: Batches | None, fast: bool,
                            stored: StoredToken, now: datetime) -> InvalidGrantError:
    """RFC 9700 §4.14.2: a rotated refresh token presented again, one after the other or at
    the same time as its rotation, means someone holds a copy: its whole grant is revoked,
    committed (and announced to every replica) before the refusal is answered."""
    reason = "refresh token reuse detected"
    log.warning("refresh token reused", extra={
        "event": "refresh_replayed", "integration_id": str(stored.integration_id),
        "plan_id": str(stored.plan_id), "family_id": str(stored.family_id)})
    if fast and batches is not None:
        await batches.revoker.revoke(stored, actor="system", reason=reason, at=now,
                                     action="token.replayed")
    else:
        await tokens.revoke(session, stored, actor="system", reason=reason, now=now,
                            action="token.replayed")
        await persist_before_refusing(session)
    return InvalidGrantError(description="the refresh token was already used; its grant is "
                                         "revoked")


async def refresh_token(session: AsyncSession, settings: Settings,
                        integ: Integration | ClientFacts, form: dict[str, str],
                        now: datetime, *, tcache: TokenCache | None = None,
                        batches: Batches | None = None,
                        proof: dpop.Proof | None = None) -> Issued:
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
        raise await _refresh_replayed(session, batches, fast, stored, now)
    if verdict.reason is Inactive.integration_refused and verdict.access is not None:
        raise callers.refused(verdict.access)
    if not verdict.active:
        raise InvalidGrantError(description=f"the refresh token is {verdict.reason}")
    if stored.jkt is not None and (proof is None or proof.jkt != stored.jkt):
        # RFC 9449 §5: a public client's refresh token is bound to its key: only that key's
        # holder refreshes.
        raise dpop.InvalidDPoPProof(description="the refresh token is bound to another DPoP "
                                                "key" if proof is not None else
                                    "the refresh token is DPoP-bound: a DPoP proof of its "
                                    "key is required")
    jkt = bound_key(integ, proof)
    scopes = narrow_scope(form.get("scope"), stored.scopes.split())
    minted = _mint(settings, grant="refresh_token", integ=integ, plan_id=stored.plan_id,
                   period=stored.facts.period, user_id=stored.user_id, scopes=scopes, now=now,
                   family_id=stored.family_id, with_refresh=True, parent_id=stored.id,
                   origin=stored.issued_at, jkt=jkt, refresh_jkt=stored.jkt)
    if fast:
        rotated = await batches.writer.write(minted.rows, rotate=stored.id, at=now,
                                             events=minted.events)
    else:
        rotated = (await session.execute(
            update(Token).where(Token.id == stored.id, Token.used_at.is_(None),
                                Token.revoked_at.is_(None))
            .values(used_at=now))).rowcount == 1
        if rotated:
            await cache.changed(session, token_ids=[stored.id], listed=[stored.plan_id])
            await tokens.insert_rows(session, minted.rows, minted.events)
    if not rotated:
        # A concurrent exchange of the same token won: this one is a reuse all the same.
        raise await _refresh_replayed(session, batches, fast, stored, now)
    return minted.issued


async def client_credentials(session: AsyncSession, settings: Settings,
                             integ: Integration | ClientFacts, form: dict[str, str],
                             now: datetime, *, tcache: TokenCache | None = None,
                             batches: Batches | None = None,
                             proof: dpop.Proof | None = None) -> Issued:
    """§4.4: the integration acts for a plan: its own (custom) or one it is installed in, with
    at most the scopes a plan admin approved there (rule 11)."""
    if not integ.confidential:
        raise UnauthorizedClientError(description="public clients may not use "
                                                  "client_credentials")
    if integ.plan_id is None:
        installed = await placements.installed(session, tcache, integ.id)
        wanted = form.get("plan_id")
        found = None
        if wanted:
            found = next((p for p in installed if str(p.plan_id) == wanted), None)
        elif len(installed) == 1:
            found = installed[0]
        if found is None:
            raise UnauthorizedClientError(
                description="the integration is not installed in the plan; name one installed "
                            "plan with 'plan_id'" if installed or wanted else
                "the integration is not installed in any plan")
        access = decide(facts_of(integ), found.state, now)
    else:
        access, found = await access_in_plan(session, integ, integ.plan_id, now, tcache)
    if not access.allowed:
        raise callers.refused(access)
    scopes = narrow_scope(form.get("scope"), grantable(integ, found))
    minted = _mint(settings, grant="client_credentials", integ=integ, plan_id=found.plan_id,
                   period=found.period, user_id=None, scopes=scopes, now=now, family_id=None,
                   with_refresh=False,  # §4.4.3: no refresh token for client credentials
                   jkt=bound_key(integ, proof))
    if batches is None or session.in_transaction():
        await tokens.insert_rows(session, minted.rows, minted.events)
    else:
        # Everything came from the cache and the grant only writes its row: it joins the rows
        # of concurrent requests in one committed INSERT (group commit, app/tokens/batches.py).
        await batches.writer.write(minted.rows, events=minted.events)
    return minted.issued
