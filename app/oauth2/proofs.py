"""The DPoP proofs already used (RFC 9449 §11.1), shared by every replica: a proof's key is
inserted on its first use; a second use finds it taken. Kept until the proof's `iat` leaves the
accepted window; the worker prunes the rest (`dpop.prune`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime


class UsedProof(Base):
    __tablename__ = "dpop_proofs"
    __table_args__ = (Index("ix_dpop_proofs_expires_at", "expires_at"),)

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of (jkt, jti)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
