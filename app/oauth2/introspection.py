"""RFC 7662 token introspection at `/oauth2/introspect`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidRequestError, UnauthorizedClientError
from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app import credentials
from app.api.deps import Now, Session
from app.api.responses import JSON, NO_STORE
from app.credentials import SecretKind
from app.integrations.models import Integration
from app.oauth2 import clients
from app.oauth2.requests import read_form
from app.tokens import cache as token_cache
from app.tokens.cache import TokenCache
from app.tokens.rules import TokenKind, check

router = APIRouter(tags=["oauth2"])

INACTIVE: dict[str, Any] = {"active": False}
_TOKEN_KINDS = {SecretKind.personal, SecretKind.integration, SecretKind.access,
                SecretKind.refresh}


async def introspect(session: AsyncSession, caller: Integration, token: str,
                     now: datetime, cache: TokenCache | None = None) -> dict[str, Any]:
    """§2.2: `active` plus metadata for a live token; `{"active": false}` and nothing else for
    any token that is unknown, malformed, revoked, expired, refused, or of another plan."""
    if credentials.kind_of(token) not in _TOKEN_KINDS:
        return INACTIVE
    stored = await token_cache.find_by_digest(cache, session, credentials.digest(token))
    # Rule 9: a plan's own client sees only its plan's tokens; a platform client sees all.
    if stored is None or (caller.plan_id is not None and caller.plan_id != stored.plan_id):
        return INACTIVE
    verdict = check(stored.facts, now)
    if not verdict.active:
        return INACTIVE
    answer: dict[str, Any] = {
        "active": True,
        "scope": stored.scopes,
        "client_id": stored.client_id,
        "sub": str(stored.user_id) if stored.user_id else stored.client_id,
        "token_type": "refresh_token" if stored.kind == TokenKind.refresh else "Bearer",
        "iat": int(stored.issued_at.timestamp()),
        "plan_id": str(stored.plan_id),
        "token_kind": stored.kind,
    }
    if verdict.expiry is not None:
        answer["exp"] = int(verdict.expiry.timestamp())
    if answer["client_id"] is None:
        del answer["client_id"]
    return answer


@router.post("/oauth2/introspect")
async def introspection_endpoint(request: Request, session: Session, now: Now) -> JSON:
    form = await read_form(request)
    client = await clients.authenticate(request, session, form, allow_public=False)
    if not client.integration.can_introspect:
        raise UnauthorizedClientError(description="this client may not introspect tokens",
                                      status_code=403)
    token = form.get("token")
    if not token:
        raise InvalidRequestError(description="the 'token' parameter is required")
    answer = await introspect(session, client.integration, token, now,
                              request.app.state.token_cache)
    return JSON(answer, headers=NO_STORE)
