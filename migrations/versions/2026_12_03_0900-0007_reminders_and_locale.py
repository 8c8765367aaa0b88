"""reminders to plan admins in the outbox (no token, a unique topic), users' chosen language

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notification_outbox") as batch:
        batch.alter_column("token_id", existing_type=sa.Uuid(), nullable=True)
        batch.add_column(sa.Column("topic", sa.String(length=300), nullable=True))
        batch.create_unique_constraint(op.f("uq_notification_outbox_topic"), ["topic"])
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("locale", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("locale")
    op.execute("DELETE FROM notification_outbox WHERE token_id IS NULL")
    with op.batch_alter_table("notification_outbox") as batch:
        batch.drop_constraint(op.f("uq_notification_outbox_topic"), type_="unique")
        batch.drop_column("topic")
        batch.alter_column("token_id", existing_type=sa.Uuid(), nullable=False)
