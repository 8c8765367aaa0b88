"""Append-only audit trail."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, and_, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.models import AuditEvent
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


async def page(session: AsyncSession, plan_id: uuid.UUID, limit: int,
               cursor: str | None, action: str | None = None) -> tuple[list[Row], str | None]:
    """A page of the plan's trail, newest first: its own events, and the platform's decisions
    on integrations installed in it (only the actions starting with `action`, if given); and
    the cursor of the next page, if there is one."""
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
    if action:
        escaped = action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        matching = AuditEvent.action.like(f"{escaped}%", escape="\\")
        after = matching if after is None else and_(after, matching)
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
    return rows[:limit], (_cursor(rows[limit - 1]) if len(rows) > limit else None)
