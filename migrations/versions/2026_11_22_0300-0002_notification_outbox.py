"""notification outbox, and partial indexes on tokens for the expiry sweeps

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 03:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Only live personal and integration tokens: what the sweeps still have to look at.
_LIVE = ("kind IN ('personal', 'integration') AND revoked_at IS NULL AND expired_at IS NULL")
_LIVE_INTRINSIC = f"{_LIVE} AND expires_at IS NOT NULL"
_MARKED = "expired_at IS NOT NULL"


def _where(predicate: str) -> dict[str, sa.TextClause]:
    return {"postgresql_where": sa.text(predicate), "sqlite_where": sa.text(predicate)}


def upgrade() -> None:
    op.create_table(
        "notification_outbox",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("token_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period", sa.String(length=40), nullable=False),
        sa.Column("plan_id", sa.Uuid(), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=True),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["plans.id"], name=op.f("fk_notification_outbox_plan_id_plans")
        ),
        sa.ForeignKeyConstraint(
            ["token_id"], ["tokens.id"], name=op.f("fk_notification_outbox_token_id_tokens")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_outbox")),
        sa.UniqueConstraint(
            "token_id", "kind", "expires_at", name=op.f("uq_notification_outbox_token_id")
        ),
    )
    with op.batch_alter_table("notification_outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_notification_outbox_status_next_attempt_at",
            ["status", "next_attempt_at"],
            unique=False,
        )

    indexes = [("ix_tokens_sweep_unexpired", ["plan_id", "issued_at"], _LIVE),
               ("ix_tokens_sweep_intrinsic", ["expires_at"], _LIVE_INTRINSIC),
               ("ix_tokens_sweep_marked", ["plan_id", "issued_at"], _MARKED)]
    if op.get_bind().dialect.name == "postgresql":
        # `tokens` may hold millions of rows: built without blocking its writes (`tessera
        # migrate` runs while other replicas serve).
        with op.get_context().autocommit_block():
            for name, columns, predicate in indexes:
                op.create_index(name, "tokens", columns, unique=False,
                                postgresql_concurrently=True, if_not_exists=True,
                                **_where(predicate))
    else:
        with op.batch_alter_table("tokens", schema=None) as batch_op:
            for name, columns, predicate in indexes:
                batch_op.create_index(name, columns, unique=False, **_where(predicate))


def downgrade() -> None:
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_tokens_sweep_marked")
        batch_op.drop_index("ix_tokens_sweep_intrinsic")
        batch_op.drop_index("ix_tokens_sweep_unexpired")

    with op.batch_alter_table("notification_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_notification_outbox_status_next_attempt_at")

    op.drop_table("notification_outbox")
