"""The notification outbox, and the indexes on `tokens` that only the expiry sweeps use.

One row per email to send. The UNIQUE key (token, kind of notice, effective-expiry value) is what
makes a notice exist at most once, whatever the number of workers (rule 5); `status`, `attempts`,
`next_attempt_at` and the claim lease (`claimed_until`) drive delivery. A plan admin's reminder
about an integration (`app.notifications.reminders`) is about no token: its UNIQUE `topic` (what
it says, to whom, about which deadline or decision) makes it exist at most once.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    and_,
    literal_column,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, new_id
from app.tokens.models import Token


class OutboxMessage(Base):
    __tablename__ = "notification_outbox"
    __table_args__ = (
        UniqueConstraint("token_id", "kind", "expires_at"),
        UniqueConstraint("topic"),
        Index("ix_notification_outbox_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    # None for a reminder to a plan admin (which has a `topic` instead).
    token_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tokens.id"))
    kind: Mapped[str] = mapped_column(String(20))  # expiring | expired | a reminder's kind
    # The token's effective expiry (rule 1) this notice is about; for a reminder, the deadline
    # or the decision's time it is about.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    topic: Mapped[str | None] = mapped_column(String(300))
    # The plan's period that expiry was computed under, canonical ("90 days"), or "none".
    # The sweeps' anti-join matches on it: for one token and one period the expiry is fixed.
    period: Mapped[str] = mapped_column(String(40))
    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id"))
    recipient: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    # pending, then sent, failed (refused for good) or skipped (no longer true, or nobody to tell)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# The long-lived kinds the worker notifies about and marks expired. Literal SQL, not bound
# parameters, so PostgreSQL can prove a query's WHERE implies a partial index's predicate.
NOTIFIED_KINDS = ("personal", "integration")
NOTIFIED = Token.kind.in_([literal_column(f"'{kind}'") for kind in NOTIFIED_KINDS])
# Not revoked (revoked tokens are not notified) and not yet marked expired by the worker.
LIVE = and_(NOTIFIED, Token.revoked_at.is_(None), Token.expired_at.is_(None))
MARKED = Token.expired_at.is_not(None)

# Partial indexes: each holds only what a sweep still has to look at, so a cycle costs what
# changed, not every token ever expired. Declared here, next to their only users, so the check
# path's model stays as it is; created by migration 0002.
Index("ix_tokens_sweep_unexpired", Token.plan_id, Token.issued_at,
      postgresql_where=LIVE, sqlite_where=LIVE)
LIVE_INTRINSIC = and_(LIVE, Token.expires_at.is_not(None))
Index("ix_tokens_sweep_intrinsic", Token.expires_at,
      postgresql_where=LIVE_INTRINSIC, sqlite_where=LIVE_INTRINSIC)
Index("ix_tokens_sweep_marked", Token.plan_id, Token.issued_at,
      postgresql_where=MARKED, sqlite_where=MARKED)

# Rows that still hold their message: pruning (`outbox.prune`) strips the old ones and reads
# only these, oldest first, so a cycle costs what is left to prune.
UNPRUNED = OutboxMessage.body != literal_column("''")
Index("ix_notification_outbox_unpruned", OutboxMessage.created_at,
      postgresql_where=UNPRUNED, sqlite_where=UNPRUNED)
