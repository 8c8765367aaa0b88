"""Users of a plan, managed by its system admins; `/v1/me` for the caller."""

from __future__ import annotations

import uuid

from fastapi import Request

from app.api.deps import Now, Session
from app.api.responses import Rendered
from app.api.routing import api_router
from app.auth.dependencies import CurrentPrincipal
from app.users import facts, service
from app.users.schemas import UserIn, UserOut

router = api_router(tags=["users"])


@router.post("/v1/plans/{plan_id}/users", status_code=201, response_model=UserOut)
async def create_user(plan_id: uuid.UUID, body: UserIn, principal: CurrentPrincipal,
                      session: Session, now: Now):
    principal.require_plan_admin(plan_id, write=True)
    principal.require_own_credentials("creating a user")
    user = await service.create(session, plan_id=plan_id, email=body.email, name=body.name,
                                role=body.role, password=body.password, actor=principal.actor,
                                now=now)
    return facts.of(user)


@router.get("/v1/plans/{plan_id}/users", response_model=list[UserOut])
async def list_users(plan_id: uuid.UUID, principal: CurrentPrincipal, session: Session,
                     request: Request):
    principal.require_plan_admin(plan_id, write=False)
    return Rendered(await service.list_in_plan(session, plan_id,
                                               request.app.state.token_cache))


@router.get("/v1/me", response_model=UserOut)
async def me(principal: CurrentPrincipal, session: Session):
    user_id = principal.require_user()
    principal.require_scope("profile")
    user = principal.user  # read to authenticate the token (cached with it)
    if user is None:
        user = facts.of((await session.execute(facts.BY_ID, {"user_id": user_id})).one())
    return Rendered(user)
