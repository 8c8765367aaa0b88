"""`GET /v1/plans/{plan_id}/audit`: the plan's audit trail, newest first, by cursor."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import and_, or_, select, union_all

from app.api.deps import Session
from app.api.responses import Rendered
from app.api.routing import api_router
from app.audit.models import AuditEvent
from app.auth.dependencies import CurrentPrincipal
from app.errors import InvalidRequest
from app.integrations.models import Installation

router = api_router(tags=["audit"])

_COLUMNS = (AuditEvent.id, AuditEvent.occurred_at, AuditEvent.actor, AuditEvent.action,
            AuditEvent.target_type, AuditEvent.target_id, AuditEvent.detail)


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


def _cursor(event: AuditEvent) -> str:
    return base64.urlsafe_b64encode(
        f"{event.occurred_at.isoformat()}|{event.id}".encode()).decode()


def _parse_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """A cursor this API gave out: an aware instant a UTC column can hold, and an id. Anything
    else (crafted by hand: no zone, or a year 1 or 9999 that leaves the range once in UTC) is a
    422, never a statement that fails."""
    try:
        at, _, ident = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError("no time zone")
        return when.astimezone(UTC), uuid.UUID(ident)
    except (ValueError, UnicodeDecodeError, OverflowError):
        raise InvalidRequest("the cursor is not one this API gave out",
                             code="invalid_cursor") from None


@router.get("/v1/plans/{plan_id}/audit", response_model=AuditPage)
async def plan_audit(plan_id: uuid.UUID, principal: CurrentPrincipal, session: Session,
                     limit: Annotated[int, Query(ge=1, le=200)] = 50,
                     cursor: Annotated[str | None, Query(max_length=200)] = None):
    """The plan's own events, and the platform's decisions on integrations installed in it."""
    principal.require_plan_admin(plan_id, write=False)
    installed = select(Installation.integration_id).where(Installation.plan_id == plan_id)
    installed_ids = [str(i) for i in (await session.execute(installed)).scalars()]
    # Two reads, each along the (plan_id, occurred_at) index and cut at the page's size, then
    # merged: one read with an OR of the two kinds would scan the whole table for every page.
    newest = (AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
    after = None
    if cursor:
        at, ident = _parse_cursor(cursor)
        after = or_(AuditEvent.occurred_at < at,
                    and_(AuditEvent.occurred_at == at, AuditEvent.id < ident))
    kinds = [AuditEvent.plan_id == plan_id]
    if installed_ids:
        kinds.append(and_(AuditEvent.plan_id.is_(None), AuditEvent.target_type == "integration",
                          AuditEvent.target_id.in_(installed_ids)))
    parts = [select(AuditEvent.id).where(kind, *([after] if after is not None else []))
             .order_by(*newest).limit(limit + 1).subquery() for kind in kinds]
    # Each part as a subquery of its own: SQLite takes no ORDER BY inside a UNION's members.
    ids = union_all(*(select(part.c.id) for part in parts)).subquery() if len(parts) > 1 \
        else parts[0]
    rows = list((await session.execute(
        select(*_COLUMNS).where(AuditEvent.id.in_(select(ids.c.id)))
        .order_by(*newest).limit(limit + 1))).all())
    page = rows[:limit]
    return Rendered(AuditPage(
        items=[AuditEventOut(id=e.id, occurred_at=e.occurred_at, actor=e.actor, action=e.action,
                             target_type=e.target_type, target_id=e.target_id, detail=e.detail)
               for e in page],
        next_cursor=_cursor(page[-1]) if len(rows) > limit else None,
    ))
