"""Personal tokens (`/v1/me/tokens`) and the plan admin's view of every token of the plan."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import Body, Query, Request, Response

from app.api.deps import Now, Session
from app.api.responses import Rendered
from app.api.routing import api_router
from app.auth.dependencies import basic_credentials, current_principal
from app.auth.principal import Principal
from app.errors import NotFound, Unauthorized
from app.oauth2 import connections
from app.plans import service as plans
from app.tokens import cache, repository, service
from app.tokens.rules import Inactive, TokenKind, check, settled_until_all
from app.tokens.schemas import (
    GrantList,
    GrantOut,
    IssuedTokenOut,
    PersonalTokenIn,
    TokenList,
    TokenStatusOut,
    fields_of,
)
from app.users import service as users

router = api_router(tags=["tokens"])

Limit = Annotated[int, Query(ge=1, le=500)]
# Bounded: skipping rows costs the database a read of each, and a listing must finish within
# the statement timeout; past 100,000 rows, narrow the listing with its filters.
MAX_OFFSET = 100_000
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET,
                              description="rows to skip, at most 100,000 (narrow the listing "
                                          "with its filters beyond)")]


async def _user_for_creation(request: Request, session: Session, now: Now) -> Principal:
    """The user's own credentials (rule 11): one of their personal tokens, or, so a user can
    get a first token, HTTP Basic email:password. Never an OAuth or integration token, whatever
    its scopes."""
    basic = basic_credentials(request.headers.get("authorization"))
    if basic is None:
        principal = await current_principal(request, session, now)
        principal.require_user()
        principal.require_own_credentials("creating a personal token")
        return principal
    user = await users.sign_in(session, *basic, via="basic", now=now,
                               throttles=request.app.state.throttles,
                               source=request.client.host if request.client else None)
    if user is None:
        raise Unauthorized("wrong email or password", error=None)
    return Principal(kind="user", plan_id=user.plan_id, user_id=user.id, role=user.role,
                     credential="password")


@router.post("/v1/me/tokens", status_code=201, response_model=IssuedTokenOut)
async def create_personal_token(
    request: Request, session: Session, now: Now,
    body: Annotated[PersonalTokenIn | None, Body()] = None,
):
    principal = await _user_for_creation(request, session, now)
    own = principal.token  # the caller's own token, checked by its plan's policy just now
    stored, secret = await service.create_personal(
        session, request.app.state.token_batches, plan_id=principal.plan_id,
        user_id=principal.user_id, name=body.name if body else None, now=now,
        via=principal.credential,
        policy=repository.policy_of(own) if own is not None and own.plan_id == principal.plan_id
        else None)
    return Rendered(IssuedTokenOut.of(stored, now, token=secret),
                    status_code=201)


@router.get("/v1/me/tokens", response_model=TokenList)
async def list_personal_tokens(request: Request, session: Session, now: Now,
                               limit: Limit = 100, offset: Offset = 0):
    principal = await current_principal(request, session, now)
    user_id = principal.require_user()
    principal.require_scope("tokens:read")
    return await _listing(request, session, principal.plan_id, now, limit, offset,
                          user_id=user_id, kind=TokenKind.personal.value)


@router.delete("/v1/me/tokens/{token_id}", status_code=204)
async def revoke_personal_token(token_id: uuid.UUID, request: Request, session: Session,
                                now: Now) -> Response:
    principal = await current_principal(request, session, now)
    user_id = principal.require_user()
    principal.require_scope("tokens:write")
    stored = await service.get_in_plan(session, principal.plan_id, token_id, user_id=user_id)
    if stored.kind != TokenKind.personal:
        raise NotFound("no such token")
    await service.revoke(session, stored, actor=principal.actor, reason="revoked by its owner",
                         now=now)
    return Response(status_code=204)


@router.get("/v1/plans/{plan_id}/tokens", response_model=TokenList)
async def list_plan_tokens(plan_id: uuid.UUID, request: Request, session: Session, now: Now,
                           limit: Limit = 100, offset: Offset = 0,
                           kind: Annotated[TokenKind | None, Query()] = None,
                           user_id: Annotated[uuid.UUID | None, Query()] = None):
    principal = await current_principal(request, session, now)
    principal.require_plan_admin(plan_id, write=False)
    return await _listing(request, session, plan_id, now, limit, offset, in_plan=True,
                          user_id=user_id, kind=kind.value if kind is not None else None)


@router.delete("/v1/plans/{plan_id}/tokens/{token_id}", status_code=204)
async def revoke_plan_token(plan_id: uuid.UUID, token_id: uuid.UUID, request: Request,
                            session: Session, now: Now) -> Response:
    principal = await current_principal(request, session, now)
    principal.require_plan_admin(plan_id, write=True)
    stored = await service.get_in_plan(session, plan_id, token_id)
    await service.revoke(session, stored, actor=principal.actor,
                         reason="revoked by a plan admin", now=now)
    return Response(status_code=204)


@router.get("/v1/me/tokens/{token_id}/status", response_model=TokenStatusOut)
async def personal_token_status(token_id: uuid.UUID, request: Request, session: Session,
                                now: Now):
    """Why is my token (not) active: expired under which period, revoked by whom, refused by
    which integration rule."""
    principal = await current_principal(request, session, now)
    user_id = principal.require_user()
    principal.require_scope("tokens:read")
    stored = await service.get_in_plan(session, principal.plan_id, token_id, user_id=user_id)
    return TokenStatusOut.of(stored, now, await plans.history(
        session, principal.plan_id, kept=request.app.state.token_cache))


@router.get("/v1/plans/{plan_id}/tokens/{token_id}/status", response_model=TokenStatusOut)
async def plan_token_status(plan_id: uuid.UUID, token_id: uuid.UUID, request: Request,
                            session: Session, now: Now):
    principal = await current_principal(request, session, now)
    principal.require_plan_admin(plan_id, write=False)
    stored = await service.get_in_plan(session, plan_id, token_id)
    return TokenStatusOut.of(stored, now, await plans.history(
        session, plan_id, kept=request.app.state.token_cache))


async def _listing(request: Request, session: Session, plan_id: uuid.UUID, now: datetime,
                   limit: int, offset: int, *, in_plan: bool = False,
                   user_id: uuid.UUID | None = None, kind: str | None = None) -> Rendered:
    """A page of the tokens of the plan `plan_id` (`in_plan`) or of its user `user_id`, of one
    kind or all. Kept as answered while the cache serves, until a change or the first instant
    one of its rows is judged otherwise (`cache.read_listing`)."""

    async def read() -> tuple[bytes, datetime | None]:
        items = await repository.list_where(session, plan_id=plan_id if in_plan else None,
                                            user_id=user_id, kind=kind, limit=limit,
                                            offset=offset)
        verdicts = [check(t.facts, now) for t in items]
        expired = any(v.reason is Inactive.expired for v in verdicts)
        # The plan's past periods are read only when a token has expired (to say when it died).
        history = await plans.history(session, plan_id, kept=request.app.state.token_cache) \
            if expired else None
        body = Rendered.fields(TokenList, {
            "items": [fields_of(t, now, history, verdict=v)
                      for t, v in zip(items, verdicts, strict=True)],
            "limit": limit, "offset": offset}).body
        return body, settled_until_all((t.facts for t in items), now)

    key = ("tokens", in_plan, plan_id, user_id, kind, limit, offset)
    return Rendered.of_body(await cache.read_listing(request.app.state.token_cache, key,
                                                     plan_id, now, read))


@router.get("/v1/me/grants", response_model=GrantList)
async def list_grants(request: Request, session: Session, now: Now):
    """Connected apps: the integrations the caller authorized through OAuth, with the scopes
    their live grants hold, when the first was authorized and when one was last refreshed."""
    principal = await current_principal(request, session, now)
    user_id = principal.require_user()
    principal.require_scope("tokens:read")
    found = await connections.of_user(session, user_id, now)
    return Rendered(GrantList(items=[GrantOut.model_validate(c, from_attributes=True)
                                     for c in found]))


@router.delete("/v1/me/grants/{integration_id}", status_code=204)
async def revoke_grants(integration_id: uuid.UUID, request: Request, session: Session,
                        now: Now) -> Response:
    """Disconnect an app: every access and refresh token the caller holds for it is revoked."""
    principal = await current_principal(request, session, now)
    principal.require_user()
    principal.require_scope("tokens:write")
    if not await connections.revoke(session, principal, integration_id, now):
        raise NotFound("no such connected app")
    return Response(status_code=204)
