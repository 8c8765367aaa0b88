"""token listings walk an index in their order: (plan_id, issued_at, id) and (user_id, kind,
issued_at, id) replace (plan_id, issued_at) and (user_id)

A page of a plan's or a user's tokens is ordered newest first with the id as tie-breaker. With
(plan_id, issued_at) alone, PostgreSQL read every token sharing the newest instant to sort them by
id (50,000 tokens issued in one instant: 29 ms per page); a user's tokens were all read and
sorted, and a user's personal tokens are listed past all their OAuth tokens without the kind.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NEW = {"ix_tokens_plan_id_issued_at_id": ["plan_id", "issued_at", "id"],
        "ix_tokens_user_id_kind_issued_at_id": ["user_id", "kind", "issued_at", "id"]}
_OLD = {"ix_tokens_plan_id_issued_at": ["plan_id", "issued_at"],
        "ix_tokens_user_id": ["user_id"]}


def _valid(name: str) -> bool | None:
    """PostgreSQL: whether the index is usable; None when there is none of that name."""
    row = op.get_bind().execute(
        sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
        {"name": name}).first()
    return None if row is None else bool(row[0])


def _swap(create: dict[str, list[str]], drop: dict[str, list[str]]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Built without locking out token writes (`tessera migrate` runs on every start); the
        # old indexes serve until the new ones exist. A concurrent build interrupted (the
        # process stopped while it waited for open transactions) leaves an invalid index that
        # IF NOT EXISTS would keep: it is dropped and built again, and the old indexes go only
        # once every new one is valid.
        with op.get_context().autocommit_block():
            for name, columns in create.items():
                if _valid(name) is False:
                    op.drop_index(name, table_name="tokens", postgresql_concurrently=True)
                op.create_index(name, "tokens", columns, postgresql_concurrently=True,
                                if_not_exists=True)
            invalid = [name for name in create if not _valid(name)]
            if invalid:
                raise RuntimeError(f"index {', '.join(invalid)} was not built; run the "
                                   "migration again")
            for name in drop:
                op.drop_index(name, table_name="tokens", postgresql_concurrently=True,
                              if_exists=True)
    else:
        for name, columns in create.items():
            op.create_index(name, "tokens", columns)
        for name in drop:
            op.drop_index(name, table_name="tokens")


def upgrade() -> None:
    _swap(_NEW, _OLD)


def downgrade() -> None:
    _swap(_OLD, _NEW)
