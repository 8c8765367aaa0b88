"""expiry is final (plans.expired_through, plan_past_periods), installations record approved
scopes, codes remember whether the request carried redirect_uri

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("plans") as batch:
        batch.add_column(sa.Column("expired_through", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "plan_past_periods",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("plan_id", sa.Uuid(), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("unit", sa.String(length=10), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cut_off", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replaced_by", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"],
                                name=op.f("fk_plan_past_periods_plan_id_plans")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_past_periods")),
    )
    op.create_index("ix_plan_past_periods_plan_id_until", "plan_past_periods",
                    ["plan_id", "until"], unique=False)
    # Every installation so far may do what its integration registered: that is what tokens
    # for it could carry until now. A new consent records what the admin approved.
    with op.batch_alter_table("installations") as batch:
        batch.add_column(sa.Column("approved_scopes", sa.JSON(), nullable=False,
                                   server_default=sa.text("'[]'")))
    op.execute("UPDATE installations SET approved_scopes = (SELECT integrations.scopes FROM "
               "integrations WHERE integrations.id = installations.integration_id)")
    with op.batch_alter_table("authorization_codes") as batch:
        batch.add_column(sa.Column("redirect_uri_sent", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("authorization_codes") as batch:
        batch.drop_column("redirect_uri_sent")
    with op.batch_alter_table("installations") as batch:
        batch.drop_column("approved_scopes")
    op.drop_index("ix_plan_past_periods_plan_id_until", table_name="plan_past_periods")
    op.drop_table("plan_past_periods")
    with op.batch_alter_table("plans") as batch:
        batch.drop_column("expired_through")
