"""Append-only audit trail."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.models import AuditEvent


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
