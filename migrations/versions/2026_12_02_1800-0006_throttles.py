"""throttles: failed attempts at guessable secrets, shared by every replica

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "throttles",
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("strikes", sa.Integer(), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_throttles")),
    )
    op.create_index(op.f("ix_throttles_blocked_until"), "throttles", ["blocked_until"],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_throttles_blocked_until"), table_name="throttles")
    op.drop_table("throttles")
