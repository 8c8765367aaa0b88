"""Append-only audit trail."""

from __future__ import annotations

import base64
import functools
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Integer,
    Row,
    Select,
    String,
    Uuid,
    and_,
    bindparam,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.models import AuditEvent
from app.db import dialect_of, in_list, rows
from app.errors import InvalidRequest
from app.integrations.models import Installation

_COLUMNS = (AuditEvent.id, AuditEvent.occurred_at, AuditEvent.actor, AuditEvent.action,
            AuditEvent.target_type, AuditEvent.target_id, AuditEvent.detail)


async def record(session: AsyncSession, actor: str, action: str, plan_id: uuid.UUID | None,
                 target_type: str, target_id: uuid.UUID | str, now: datetime,
                 **detail: Any) -> None:
    session.add(AuditEvent(**row(actor, action, plan_id, target_type, target_id, now, **detail)))


def row(actor: str, action: str, plan_id: uuid.UUID | None, target_type: str,
        target_id: uuid.UUID | str, now: datetime, **detail: Any) -> dict[str, Any]:
    """An audit event's columns, for `record` and for writes that insert rows themselves
    (`app/tokens/batches.py`)."""
    return {"id": uuid.uuid4(), "occurred_at": now, "actor": actor, "action": action,
            "plan_id": plan_id, "target_type": target_type, "target_id": str(target_id),
            "detail": {k: v for k, v in detail.items() if v is not None}}


def _cursor(event: Row) -> str:
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


# A page's statement for each shape of request (the platform's decisions included or not, after
# a cursor or not, filtered by action or not), built once, its values bound: building it per
# request cost more than reading it.
_NEWEST = (AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
_PLAN = bindparam("plan_id", type_=Uuid)
_LIMIT = bindparam("limit", type_=Integer)
_AT = bindparam("at", type_=AuditEvent.occurred_at.type)
_INSTALLED = select(Installation.integration_id).where(Installation.plan_id == _PLAN)


@functools.cache
def _page_query(platform: bool, after: bool, action: bool, array: bool) -> Select[Any]:
    """`array`: the installed integrations as one array parameter (PostgreSQL: `in_list`)."""
    conditions = []
    if after:
        conditions.append(or_(AuditEvent.occurred_at < _AT, and_(
            AuditEvent.occurred_at == _AT, AuditEvent.id < bindparam("ident", type_=Uuid))))
    if action:
        conditions.append(AuditEvent.action.like(bindparam("pattern", type_=String),
                                                 escape="\\"))
    kinds = [AuditEvent.plan_id == _PLAN]
    if platform:
        kinds.append(and_(AuditEvent.plan_id.is_(None), AuditEvent.target_type == "integration",
                          in_list(AuditEvent.target_id, "installed", array=array)))
    # Two reads, each along the (plan_id, occurred_at) index and cut at the page's size, then
    # merged: one read with an OR of the two kinds would scan the whole table for every page.
    parts = [select(AuditEvent.id).where(kind, *conditions).order_by(*_NEWEST).limit(_LIMIT)
             .subquery() for kind in kinds]
    # Each part as a subquery of its own: SQLite takes no ORDER BY inside a UNION's members.
    ids = union_all(*(select(part.c.id) for part in parts)).subquery() if len(parts) > 1 \
        else parts[0]
    return (select(*_COLUMNS).where(AuditEvent.id.in_(select(ids.c.id)))
            .order_by(*_NEWEST).limit(_LIMIT))


async def page(session: AsyncSession, plan_id: uuid.UUID, limit: int,
               cursor: str | None, action: str | None = None) -> tuple[list[Row], str | None]:
    """A page of the plan's trail, newest first: its own events, and the platform's decisions
    on integrations installed in it (only the actions starting with `action`, if given); and
    the cursor of the next page, if there is one."""
    params: dict[str, Any] = {"plan_id": plan_id, "limit": limit + 1}
    params["installed"] = [str(i) for (i,) in await rows(session, _INSTALLED, params)]
    if cursor:
        params["at"], params["ident"] = _parse_cursor(cursor)
    if action:
        escaped = action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params["pattern"] = f"{escaped}%"
    query = _page_query(bool(params["installed"]), bool(cursor), bool(action),
                        dialect_of(session) == "postgresql")
    found = list(await rows(session, query, params))
    return found[:limit], (_cursor(found[limit - 1]) if len(found) > limit else None)
