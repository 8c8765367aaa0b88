from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, new_id


class User(Base):
    """A person's account in one plan. Emails are unique per plan, not across the platform: a
    plan learns nothing of another plan's users by creating its own (rule 9)."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("email", "plan_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id"), index=True)
    # Stored lower-cased; with the plan, the login name (`users.service.account`).
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(10))  # member | admin
    password_hash: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The language the person chose in the console (`app.console.i18n`): their pages and mails.
    locale: Mapped[str | None] = mapped_column(String(8))
