from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, String, UniqueConstraint, Uuid, false
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, new_id


class Integration(Base):
    """An OAuth client: `custom` (one plan's own) or `third_party` (registered by the platform)."""

    __tablename__ = "integrations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    client_secret_digest: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    # custom | third_party | platform (a resource server of the platform's own: it introspects
    # tokens of every plan, obtains none, and is not subject to review)
    kind: Mapped[str] = mapped_column(String(20))
    # The owning plan of a custom integration; NULL for third-party ones.
    plan_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("plans.id"), index=True)
    redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    confidential: Mapped[bool] = mapped_column(Boolean, default=True)
    can_introspect: Mapped[bool] = mapped_column(Boolean, default=False)
    # RFC 9449 §5.2: its access tokens are always DPoP-bound (a token request without a proof
    # is refused).
    dpop_bound_access_tokens: Mapped[bool] = mapped_column(Boolean, default=False,
                                                           server_default=false())
    data_access: Mapped[str] = mapped_column(String(10), default="limited")
    review_status: Mapped[str] = mapped_column(String(20), default="not_reviewed")
    review_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exception_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    review_steps: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The platform's judgement that a custom integration is operated by a third party.
    judged_third_party_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deactivation_scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(100))


class Installation(Base):
    """An integration enabled in a plan, with the scopes a plan admin approved for it there: no
    token the integration gets for the plan carries more (rule 11)."""

    __tablename__ = "installations"
    __table_args__ = (UniqueConstraint("integration_id", "plan_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    integration_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("integrations.id"))
    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id"), index=True)
    state: Mapped[str] = mapped_column(String(12), default="active")  # active | deactivated
    approved_scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    installed_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    installed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deactivated_by: Mapped[str | None] = mapped_column(String(100))
    deactivation_reason: Mapped[str | None] = mapped_column(String(300))
    keep_confirmed_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    keep_confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
