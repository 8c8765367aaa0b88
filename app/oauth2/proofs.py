"""The DPoP proofs already used (RFC 9449 §11.1), shared by every replica: a proof's key is
inserted on its first use; a second use finds it taken. Kept until the proof's `iat` leaves the
accepted window; the worker prunes the rest (`dpop.prune`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from app import db
from app.db import Base, UTCDateTime
from app.tokens import cache
from app.tokens.batches import Batcher


class UsedProof(Base):
    __tablename__ = "dpop_proofs"
    __table_args__ = (Index("ix_dpop_proofs_expires_at", "expires_at"),)

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of (jkt, jti)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProofRecorder(Batcher[tuple[str, datetime], bool]):
    """`record(key, until)`: True if the proof's key was not there (its first use), False if
    it was (a replay). The keys of concurrent requests go in one INSERT ... ON CONFLICT DO
    NOTHING RETURNING, on an autocommit connection; of two equal keys in one batch, the first
    is the first use."""

    batch_size = 200

    async def record(self, key: str, until: datetime) -> bool:
        return await self._submit((key, until))

    async def _run(self, items: list[tuple[str, datetime]]) -> Sequence[bool]:
        rows = {key: until for key, until in reversed(items)}  # the first of equal keys
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        statement = (insert(UsedProof).on_conflict_do_nothing(index_elements=["key"])
                     .returning(UsedProof.key))
        async with db.connection(cache.autocommit(self.engine)) as conn:
            result = await conn.execute(
                statement, [{"key": k, "expires_at": v} for k, v in rows.items()])
            inserted = set(result.scalars().all())
        first: list[bool] = []
        for key, _until in items:
            first.append(key in inserted)
            inserted.discard(key)
        return first
