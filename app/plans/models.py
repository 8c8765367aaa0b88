from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Uuid, false
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, new_id


class Plan(Base):
    """A tenant. Holds at most one token expiration period (docs/design.md: domain model)."""

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
    # When the period in force was set (or the last one removed).
    policy_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Rule 4: every token generated at or before this instant was expired under an earlier
    # period, and stays expired whatever the period is now (`plans.expiry.cut_off`).
    expired_through: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # RFC 9449: every access token of the plan's custom integrations is DPoP-bound (their
    # token requests without a proof are refused), as if each were registered so.
    dpop_required: Mapped[bool] = mapped_column(Boolean, default=False,
                                                server_default=false())


class PastPeriod(Base):
    """A period that was in force over [since, until): kept to say when and why a token it
    expired died (rule 4). The period in force now is the plan's own."""

    __tablename__ = "plan_past_periods"
    __table_args__ = (Index("ix_plan_past_periods_plan_id_until", "plan_id", "until"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id"))
    value: Mapped[int] = mapped_column(Integer)
    unit: Mapped[str] = mapped_column(String(10))
    since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    until: Mapped[datetime] = mapped_column(UTCDateTime)
    cut_off: Mapped[datetime] = mapped_column(UTCDateTime)
    replaced_by: Mapped[str | None] = mapped_column(String(100))  # who changed it
