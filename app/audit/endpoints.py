"""`GET /v1/plans/{plan_id}/audit`: the plan's audit trail, newest first, by cursor."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import Query, Request
from pydantic import BaseModel

from app.api.deps import Now, Session
from app.api.responses import Rendered
from app.api.routing import api_router
from app.audit import service
from app.auth.dependencies import CurrentPrincipal
from app.tokens import cache

router = api_router(tags=["audit"])


class AuditEventOut(BaseModel):
    id: uuid.UUID
    occurred_at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    detail: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    next_cursor: str | None


@router.get("/v1/plans/{plan_id}/audit", response_model=AuditPage)
async def plan_audit(plan_id: uuid.UUID, principal: CurrentPrincipal, session: Session,
                     request: Request, now: Now,
                     limit: Annotated[int, Query(ge=1, le=200)] = 50,
                     cursor: Annotated[str | None, Query(max_length=200)] = None):
    """The plan's own events, and the platform's decisions on integrations installed in it."""
    principal.require_plan_admin(plan_id, write=False)

    async def read() -> tuple[bytes, None]:
        page, next_cursor = await service.page(session, plan_id, limit, cursor)
        return Rendered(AuditPage(
            items=[AuditEventOut(id=e.id, occurred_at=e.occurred_at, actor=e.actor,
                                 action=e.action, target_type=e.target_type,
                                 target_id=e.target_id, detail=e.detail) for e in page],
            next_cursor=next_cursor,
        )).body, None  # the same page until an event is added (or an installation changes)

    # Kept as answered while the cache serves: an event of this plan's, or of the platform's
    # (which the page shows through the plan's installations), drops it.
    return Rendered.of_body(await cache.read_listing(
        request.app.state.token_cache, ("audit", plan_id, limit, cursor), plan_id, now, read))
