"""RFC 7662 token introspection at `/oauth2/introspect`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidRequestError, UnauthorizedClientError
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncEngine

from app import credentials
from app.api.openapi import Introspection
from app.api.responses import JSON, NO_STORE
from app.api.routing import api_router
from app.credentials import SecretKind
from app.oauth2 import callers, clients
from app.oauth2.clients import ClientFacts
from app.oauth2.requests import read_form
from app.tokens import cache as token_cache
from app.tokens.batches import TokenReader
from app.tokens.cache import TokenCache
from app.tokens.repository import StoredToken
from app.tokens.rules import TokenKind, check

router = api_router(tags=["oauth2"])

INACTIVE: dict[str, Any] = {"active": False}
_TOKEN_KINDS = {SecretKind.personal, SecretKind.integration, SecretKind.access,
                SecretKind.refresh}


async def introspect(caller: ClientFacts, token: str, now: datetime,
                     cache: TokenCache | None, reader: TokenReader,
                     engine: AsyncEngine) -> dict[str, Any]:
    """§2.2: `active` plus metadata for a live token; `{"active": false}` and nothing else for
    any token that is unknown, malformed, revoked, expired, refused, or of a plan the caller may
    not see (rules 6 and 9: `callers.allowed_in`)."""
    digest = credentials.digest(token)
    # A cached entry is a stored token, so well formed: the format check is for the way to the
    # database.
    stored = cache.get(digest) if cache is not None else None
    if stored is None:
        if credentials.kind_of(token) not in _TOKEN_KINDS:
            return INACTIVE
        stored = await token_cache.read_missed(cache, digest, reader.find)
    if stored is None or not (await callers.access_in(caller, stored.plan_id, now, cache,
                                                       engine)).allowed:
        return INACTIVE
    return answer_for(stored, now)


def answer_for(stored: StoredToken, now: datetime) -> dict[str, Any]:
    """The answer about a token the caller may see: pure, from its facts and the clock."""
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
    if stored.jkt is not None:
        # RFC 9449 §6.2: a bound token; the resource server checks the proof's key.
        answer["cnf"] = {"jkt": stored.jkt}
        if stored.kind != TokenKind.refresh:
            answer["token_type"] = "DPoP"
    if answer["client_id"] is None:
        del answer["client_id"]
    return answer


async def handle(state: Any, authorization: str | None, form: dict[str, str],  # noqa: ANN401
                 now: datetime, source: str | None = None,
                 dpop_header: str | None = None) -> dict[str, Any]:
    """§2.1-2.2 for one request, given its `Authorization` header and form: authenticate the
    caller, then introspect. OAuth errors are raised for the error mapping to answer. `state`
    is the application's (`app.main.create_app`)."""
    cache = state.token_cache
    # Both reads (the caller, when the cache cannot answer, and the token) are batched with
    # those of concurrent requests; no request holds a connection while it waits for one.
    caller = (await clients.authenticate_cached(
        authorization, state.client_reader, form, cache, allow_public=False,
        purpose="introspect", throttles=state.throttles, source=source, now=now)).integration
    if not caller.can_introspect:
        raise UnauthorizedClientError(description="this client may not introspect tokens",
                                      status_code=403)
    if (refusal := callers.refusal(caller, now)) is not None:
        raise callers.refused(refusal, status_code=403)  # rule 6, as for its tokens
    token = form.get("token")
    if not token:
        raise InvalidRequestError(description="the 'token' parameter is required")
    return await introspect(caller, token, now, cache, state.token_batches.reader, state.engine)


def handle_cached(state: Any, authorization: str | None, form: dict[str, str],  # noqa: ANN401
                  now: datetime) -> dict[str, Any] | None:
    """`handle` where no I/O is needed: a caller whose credentials the cache knows, allowed to
    introspect, asking about a token the cache holds, of a plan the caller alone says it may
    see. None otherwise (errors included): `handle` answers, counting any cache miss once.
    For the HTTP protocol, which answers these without an ASGI request (`app.serving`)."""
    cache = state.token_cache
    key = clients.credentials_key(authorization, form, "introspect") if cache is not None \
        else None
    # Nothing counted for /metrics until it answers: `handle` counts its own lookups.
    known = cache.get_client(key, count=False) if key is not None else None
    if known is None:
        return None
    caller = known.integration
    token = form.get("token")
    if not caller.can_introspect or not token or not callers.standing(caller, now).allowed:
        return None
    stored = cache.get(credentials.digest(token), count=False)
    access = callers.access_known(caller, stored.plan_id) if stored is not None else None
    if access is None:
        return None
    cache.counted_hits(tokens=1, clients=1)
    return answer_for(stored, now) if access.allowed else INACTIVE


async def introspection_endpoint(request: Request) -> JSON:
    state = request.app.state
    form = await read_form(request)
    answer = await handle(state, request.headers.get("authorization"), form, state.clock.now(),
                          source=request.client.host if request.client else None)
    return JSON(answer, headers=NO_STORE)


# Served by a plain Starlette route, first in the router: the endpoint reads its own form, so
# FastAPI's dependency solving (and a thread hop for the clock) would only add cost to the
# hottest call of the service (bench/RESULTS.md). The API route documents it in OpenAPI.
router.add_route("/oauth2/introspect", introspection_endpoint, methods=["POST"],
                 include_in_schema=False)
router.add_api_route("/oauth2/introspect", introspection_endpoint, methods=["POST"],
                     summary="Token introspection (RFC 7662)", response_model=Introspection)
