"""Bearer authentication for the management API (RFC 6750 §2.1, §3)."""

from __future__ import annotations

import base64
import functools
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select

from app import credentials
from app.api.deps import Now, Session
from app.auth.principal import Principal
from app.credentials import BEARER_KINDS, SecretKind
from app.db import release
from app.errors import Forbidden, Unauthorized
from app.oauth2 import dpop
from app.operators.models import Operator
from app.tokens import cache as token_cache
from app.tokens import repository
from app.tokens.cache import TokenCache
from app.tokens.rules import BEARER_TOKEN_KINDS, Inactive, TokenKind, check
from app.users import facts

_NOT_BEARER = "this kind of token is not a bearer credential"


def bearer_credential(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("a bearer token is required", error=None)
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        raise Unauthorized("expected 'Authorization: Bearer <token>'", error="invalid_request")
    return value


async def principal_from_token(session: Session, secret: str, now: Now,
                               cache: TokenCache | None = None) -> Principal:
    digest = credentials.digest(secret)
    # A cached entry is a stored token, so its string is well formed and its kind is its
    # prefix's: the format check (a checksum over the string) is needed only on the way to
    # the database (as the gateway's check does).
    stored = cache.get(digest) if cache is not None else None
    if stored is None:
        kind = credentials.kind_of(secret)
        if kind is None:
            raise Unauthorized("the token is malformed (bad format or checksum)")
        if kind is SecretKind.operator:
            op = (await session.execute(
                select(Operator.id).where(Operator.token_digest == digest))).scalar_one_or_none()
            if op is None:
                raise Unauthorized("unknown token")
            return Principal(kind="operator", operator_id=op, credential="operator")
        if kind not in BEARER_KINDS:
            raise Unauthorized(_NOT_BEARER)
        stored = await token_cache.read_missed(
            cache, digest, functools.partial(repository.find_by_digest, session))
        if stored is None:
            raise Unauthorized("unknown token")
    elif stored.kind not in BEARER_TOKEN_KINDS:
        raise Unauthorized(_NOT_BEARER)
    verdict = check(stored.facts, now)
    if not verdict.active:
        if verdict.reason is Inactive.integration_refused and verdict.access is not None:
            raise Forbidden(
                f"refused: {verdict.access.describe()}", code="integration_refused",
                rule=verdict.access.rule,
                deadline=verdict.access.deadline.isoformat() if verdict.access.deadline else None,
            )
        raise Unauthorized(f"the token is {verdict.reason}")
    scopes = None if stored.kind == TokenKind.personal else frozenset(stored.scopes.split())
    if stored.user_id is None:
        return Principal(kind="client", plan_id=stored.plan_id, token_id=stored.id,
                         integration_id=stored.integration_id, scopes=scopes,
                         credential=stored.kind, token=stored)
    user = cache.get_user(stored.user_id) if cache is not None else None
    if user is None:
        generation = cache.users_generation if cache is not None else 0
        user = facts.of((await session.execute(facts.BY_ID,
                                               {"user_id": stored.user_id})).one())
        if cache is not None:
            cache.put_user(stored.user_id, user, generation)
    return Principal(kind="user", plan_id=stored.plan_id, user_id=stored.user_id, role=user.role,
                     token_id=stored.id, integration_id=stored.integration_id, scopes=scopes,
                     credential=stored.kind, user=user, token=stored)


def _dpop_refused(error: str, message: str) -> Unauthorized:
    """RFC 9449 §7.1: a refusal with the DPoP challenge."""
    refused = Unauthorized(message, error=None)
    refused.code = error
    refused.headers = {"WWW-Authenticate": dpop.challenge(error, message)}
    return refused


async def current_principal(request: Request, session: Session, now: Now) -> Principal:
    """The caller of a management request: `Authorization: Bearer <token>`, or, for a
    DPoP-bound token, `Authorization: DPoP <token>` with a proof of its key for this request
    (RFC 9449 §7)."""
    header = request.headers.get("authorization") or ""
    if header[:5].lower() != "dpop ":
        principal = await principal_from_token(session, bearer_credential(request), now,
                                               request.app.state.token_cache)
        if principal.token is not None and principal.token.jkt is not None:
            raise _dpop_refused("invalid_token", "a DPoP-bound token is sent as "
                                "'Authorization: DPoP <token>' with a DPoP proof")
        return principal
    secret = header[5:].strip()
    if not secret:
        raise Unauthorized("expected 'Authorization: DPoP <token>'", error="invalid_request")
    principal = await principal_from_token(session, secret, now, request.app.state.token_cache)
    if principal.token is None or principal.token.jkt is None:
        raise Unauthorized("the token is not DPoP-bound; send it as a bearer token")
    state = request.app.state
    await release(session)  # the proof is recorded on a connection of its own
    try:
        await dpop.possession(
            request.headers.getlist("dpop"), method=request.method,
            url=state.settings.issuer.rstrip("/") + request.url.path, now=now,
            replays=state.dpop_replays, nonces=state.dpop_nonces, access_token=secret,
            bound=principal.token.jkt)
    except dpop.UseDPoPNonce as exc:
        refused = _dpop_refused("use_dpop_nonce", exc.description)
        refused.headers["DPoP-Nonce"] = exc.nonce
        raise refused from None
    except dpop.InvalidDPoPProof as exc:
        raise _dpop_refused("invalid_dpop_proof", exc.description) from None
    return principal


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """RFC 7617 Basic credentials of an `Authorization` header, or None when it is not Basic."""
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # not base64 (binascii.Error), not UTF-8, or not ASCII text at all
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
