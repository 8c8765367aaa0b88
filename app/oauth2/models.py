from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, new_id


class AuthorizationCode(Base):
    """RFC 6749 §4.1.2 authorization code, bound to client, redirect URI and PKCE challenge."""

    __tablename__ = "authorization_codes"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    integration_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("integrations.id"))
    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    redirect_uri: Mapped[str] = mapped_column(String(2000))
    # RFC 6749 §4.1.3: the token request must repeat redirect_uri if the authorization request
    # carried it.
    redirect_uri_sent: Mapped[bool] = mapped_column(Boolean, default=True)
    scopes: Mapped[str] = mapped_column(String(1000))
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(10))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # RFC 9449 §10: the key the authorization request named (`dpop_jkt`); the code is then
    # redeemed only with a proof of that key.
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))
