from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, new_id


class Plan(Base):
    """A tenant. Holds at most one token expiration period (DESIGN: domain model)."""

    __tablename__ = "plans"
    __table_args__ = (
        CheckConstraint(
            "(expiration_value IS NULL) = (expiration_unit IS NULL)", name="period_complete"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    expiration_value: Mapped[int | None] = mapped_column(Integer)
    expiration_unit: Mapped[str | None] = mapped_column(String(10))
    policy_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
