"""partial index on the outbox rows that still hold their message, for pruning

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ix_notification_outbox_unpruned"
_UNPRUNED = "body <> ''"


def upgrade() -> None:
    where = {"postgresql_where": sa.text(_UNPRUNED), "sqlite_where": sa.text(_UNPRUNED)}
    if op.get_bind().dialect.name == "postgresql":
        # Built without locking out the worker's writes (`tessera migrate` runs on every start).
        with op.get_context().autocommit_block():
            op.create_index(_NAME, "notification_outbox", ["created_at"], unique=False,
                            postgresql_concurrently=True, if_not_exists=True, **where)
    else:
        op.create_index(_NAME, "notification_outbox", ["created_at"], unique=False, **where)


def downgrade() -> None:
    op.drop_index(_NAME, table_name="notification_outbox")
