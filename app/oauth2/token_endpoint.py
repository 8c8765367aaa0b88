"""`/oauth2/token` (RFC 6749 §3.2) and `/oauth2/revoke` (RFC 7009)."""

from __future__ import annotations

from authlib.oauth2.rfc6749.errors import InvalidRequestError, UnsupportedGrantTypeError
from fastapi import APIRouter, Request

from app import credentials
from app.api.deps import Now, Session
from app.api.responses import JSON, NO_STORE
from app.db import session_scope
from app.integrations.access import Access, ReviewStatus, Rule
from app.oauth2 import clients, grants
from app.oauth2.requests import read_form
from app.tokens import repository
from app.tokens import service as tokens

router = APIRouter(tags=["oauth2"])

GRANTS = {
    "authorization_code": grants.authorization_code,
    "refresh_token": grants.refresh_token,
    "client_credentials": grants.client_credentials,
}


async def token_endpoint(request: Request) -> JSON:
    state = request.app.state
    form = await read_form(request)
    now = state.clock.now()
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
            request.headers.get("authorization"), state.client_reader, form, state.token_cache,
            allow_public=grant_type != "client_credentials", purpose="token")
        if client.integration.review_status == ReviewStatus.revoked:
            # Rule 6: a revoked review refuses every call, whatever the plan or grant.
            raise grants.refuse(Access(False, Rule.review_revoked))
        issued = await grant(session, state.settings, client.integration, form, now,
                             tcache=state.token_cache, batches=state.token_batches)
    return JSON(issued.body(), headers=NO_STORE)


# Served by a plain Starlette route, first in the router, as introspection is: the endpoint
# reads its own form, clock and settings, so FastAPI's dependency solving only adds cost
# (bench/NOTES.md). The API route documents it in OpenAPI.
router.add_route("/oauth2/token", token_endpoint, methods=["POST"], include_in_schema=False)
router.add_api_route("/oauth2/token", token_endpoint, methods=["POST"])


@router.post("/oauth2/revoke")
async def revocation_endpoint(request: Request, session: Session, now: Now) -> JSON:
    """§2.1: the client revokes one of its own tokens; revoking a refresh token revokes its
    grant. §2.2: the answer is 200 whether or not the token was valid."""
    form = await read_form(request)
    client = await clients.authenticate(request.headers.get("authorization"),
                                        request.app.state.client_reader, form, allow_public=True)
    token = form.get("token")
    if not token:
        raise InvalidRequestError(description="the 'token' parameter is required")
    if credentials.kind_of(token) is not None:
        stored = await repository.find_by_digest(session, credentials.digest(token))
        if stored is not None and stored.integration_id == client.integration.id:
            await tokens.revoke(session, stored, actor=f"integration:{client.integration.id}",
                                reason="revoked by the client", now=now)
    return JSON({}, headers=NO_STORE)
