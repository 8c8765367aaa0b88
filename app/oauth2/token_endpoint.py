"""`/oauth2/token` (RFC 6749 §3.2) and `/oauth2/revoke` (RFC 7009)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from authlib.oauth2.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
)
from fastapi import Request

from app import credentials
from app.api.openapi import TokenResponse
from app.api.responses import JSON, NO_STORE
from app.api.routing import api_router
from app.db import session_scope
from app.oauth2 import callers, clients, dpop, grants
from app.oauth2.requests import read_form
from app.tokens import cache as token_cache

router = api_router(tags=["oauth2"])

GRANTS = {
    "authorization_code": grants.authorization_code,
    "refresh_token": grants.refresh_token,
    "client_credentials": grants.client_credentials,
}


async def proven(state: Any, header: str | None, now: datetime) -> dpop.Proof | None:  # noqa: ANN401
    """The token request's DPoP proof (RFC 9449 §5), verified and used up; None without one."""
    if header is None:
        return None
    return await dpop.possession(
        [header], method="POST", url=f"{state.settings.issuer.rstrip('/')}/oauth2/token",
        now=now, replays=state.dpop_replays, nonces=state.dpop_nonces)


async def handle(state: Any, authorization: str | None, form: dict[str, str],  # noqa: ANN401
                 now: datetime, source: str | None = None,
                 dpop_header: str | None = None) -> dict[str, Any]:
    """§3.2 for one request, given its `Authorization` and `DPoP` headers and form:
    authenticate the client, run the grant, and give the answer once what it issued is
    committed. OAuth errors are raised for the error mapping to answer. `state` is the
    application's."""
    grant_type = form.get("grant_type")
    if not grant_type:
        raise InvalidRequestError(description="the 'grant_type' parameter is required")
    grant = GRANTS.get(grant_type)
    if grant is None:
        raise UnsupportedGrantTypeError(grant_type)
    # The unit of work commits before the response is sent, and rolls back on any error.
    async with session_scope(state.sessionmaker) as session:
        # Public clients (no secret) may redeem codes and refresh: PKCE binds them instead.
        client = await clients.authenticate_cached(
            authorization, state.client_reader, form, state.token_cache,
            allow_public=grant_type != "client_credentials", purpose="token",
            throttles=state.throttles, source=source, now=now)
        if (refusal := callers.refusal(client.integration, now)) is not None:
            raise callers.refused(refusal)  # rule 6, whatever the plan or grant
        if client.integration.kind == callers.PLATFORM:
            raise UnauthorizedClientError(description="a platform resource server introspects "
                                                      "tokens; it obtains none")
        # After the client is known: an unauthenticated caller spends no proof (a stranger
        # cannot burn a client's jti), and what refuses the client is said first.
        proof = await proven(state, dpop_header, now)
        issued = await grant(session, state.settings, client.integration, form, now,
                             tcache=state.token_cache, batches=state.token_batches,
                             proof=proof)
    return issued.body()


def dpop_header(request: Request) -> str | None:
    """The one `DPoP` header (§4.3 step 1: exactly one), or None."""
    found = request.headers.getlist("dpop")
    if len(found) > 1:
        raise dpop.InvalidDPoPProof(description="exactly one DPoP header is allowed")
    return found[0] if found else None


async def token_endpoint(request: Request) -> JSON:
    state = request.app.state
    form = await read_form(request)
    body = await handle(state, request.headers.get("authorization"), form, state.clock.now(),
                        source=request.client.host if request.client else None,
                        dpop_header=dpop_header(request))
    return JSON(body, headers=NO_STORE)


# Served by a plain Starlette route, first in the router, as introspection is: the endpoint
# reads its own form, clock and settings, so FastAPI's dependency solving only adds cost
# (bench/NOTES.md). The API route documents it in OpenAPI.
router.add_route("/oauth2/token", token_endpoint, methods=["POST"], include_in_schema=False)
router.add_api_route("/oauth2/token", token_endpoint, methods=["POST"],
                     summary="Token endpoint (RFC 6749 §3.2)", response_model=TokenResponse)


async def revocation_endpoint(request: Request) -> JSON:
    """§2.1: the client revokes one of its own tokens; revoking a refresh token revokes its
    grant. A token issued to another client (or to none) is refused, and the client is told
    (`invalid_grant`, as Authlib's RFC 7009 endpoint answers). §2.2: the answer is 200 for a
    revoked or an unknown token, and it is given once the revocation is committed (with those
    of concurrent requests: `batches.TokenRevoker`). A caller refused by rule 6, as a whole or
    in the token's plan, revokes nothing."""
    state = request.app.state
    form = await read_form(request)
    now = state.clock.now()
    caller = (await clients.authenticate_cached(
        request.headers.get("authorization"), state.client_reader, form, state.token_cache,
        allow_public=True, purpose="revoke", throttles=state.throttles,
        source=request.client.host if request.client else None, now=now)).integration
    if (refusal := callers.refusal(caller, now)) is not None:
        raise callers.refused(refusal)
    token = form.get("token")
    if not token:
        raise InvalidRequestError(description="the 'token' parameter is required")
    if credentials.kind_of(token) is None:
        return JSON({}, headers=NO_STORE)  # malformed: no token of anyone's
    # A token's id, grant and client never change: cached facts name it as well as a read.
    stored = await token_cache.read_through(state.token_cache, credentials.digest(token),
                                            state.token_batches.reader.find)
    if stored is None:
        return JSON({}, headers=NO_STORE)
    if stored.integration_id != caller.id:
        raise InvalidGrantError(description="the token was not issued to this client")
    access = await callers.access_in(caller, stored.plan_id, now, state.token_cache,
                                     state.engine)
    if not access.allowed:
        raise callers.refused(access)
    await state.token_batches.revoker.revoke(
        stored, actor=f"integration:{caller.id}", reason="revoked by the client", at=now)
    return JSON({}, headers=NO_STORE)


# A plain Starlette route, as the token endpoint is; the API route documents it in OpenAPI.
router.add_route("/oauth2/revoke", revocation_endpoint, methods=["POST"],
                 include_in_schema=False)
router.add_api_route("/oauth2/revoke", revocation_endpoint, methods=["POST"],
                     summary="Token revocation (RFC 7009)", response_model=dict[str, str])
