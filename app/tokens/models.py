from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, new_id


class Token(Base):
    """One row per token string ever issued; the secret itself is never stored.

    `issued_at` is the original generation time and never changes (rules 1-2, docs/design.md).
    """

    __tablename__ = "tokens"
    __table_args__ = (
        # Listings walk these newest first, ties broken by id: a page reads its rows and stops
        # (migration 0009). A user's listings are of one kind (personal tokens; OAuth ones),
        # which a user's thousands of refresh tokens must not be walked past.
        Index("ix_tokens_plan_id_issued_at_id", "plan_id", "issued_at", "id"),
        Index("ix_tokens_user_id_kind_issued_at_id", "user_id", "kind", "issued_at", "id"),
        Index("ix_tokens_family_id", "family_id"),
        Index("ix_tokens_integration_id", "integration_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(12))  # personal | integration | access | refresh
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(8))
    name: Mapped[str | None] = mapped_column(String(200))
    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id"))
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    integration_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("integrations.id"))
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    scopes: Mapped[str] = mapped_column(String(1000), default="")
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # intrinsic lifetime
    family_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    authorization_code_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # refresh token rotated
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_reason: Mapped[str | None] = mapped_column(String(200))
    revoked_by: Mapped[str | None] = mapped_column(String(100))
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # marked by the worker
    # DPoP (RFC 9449): the thumbprint of the key the token is bound to (`cnf.jkt`), if any.
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))
