"""DPoP (RFC 9449): tokens and codes bound to a key, clients and plans that require it, used
proofs

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("dpop_jkt", sa.String(length=64), nullable=True))
    with op.batch_alter_table("authorization_codes") as batch:
        batch.add_column(sa.Column("dpop_jkt", sa.String(length=64), nullable=True))
    with op.batch_alter_table("integrations") as batch:
        batch.add_column(sa.Column("dpop_bound_access_tokens", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    with op.batch_alter_table("plans") as batch:
        batch.add_column(sa.Column("dpop_required", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    op.create_table(
        "dpop_proofs",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_dpop_proofs")),
    )
    op.create_index("ix_dpop_proofs_expires_at", "dpop_proofs", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_dpop_proofs_expires_at", table_name="dpop_proofs")
    op.drop_table("dpop_proofs")
    with op.batch_alter_table("plans") as batch:
        batch.drop_column("dpop_required")
    with op.batch_alter_table("integrations") as batch:
        batch.drop_column("dpop_bound_access_tokens")
    with op.batch_alter_table("authorization_codes") as batch:
        batch.drop_column("dpop_jkt")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("dpop_jkt")
