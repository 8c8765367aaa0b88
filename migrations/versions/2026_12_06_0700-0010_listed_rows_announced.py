"""rows added to or deleted from tokens or audit_events are announced to every replica

Statement-level triggers on each table send, at commit, one NOTIFY on the token cache's channel
naming the plans whose rows were inserted or deleted (`{"l": [...]}`; `{"l": "all"}` past 100
plans, for an event of the platform's, which plans' trails show through their installations,
or for a TRUNCATE). Replicas drop the listings they keep of those plans
(`app.tokens.cache.Keys.listed`), whoever wrote the rows: any code path, another version of
Tessera, or a person at psql (pruning the trail, say). Updates are announced by the code that
makes them, as every change of a token's facts is. PostgreSQL only: the embedded SQLite default
keeps no listings (its cache never serves).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 07:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("tokens", "audit_events")

# The channel is the token cache's (`app.tokens.cache.CHANNEL`), written out here: a migration
# does not import the application.
_FUNCTION = """
CREATE OR REPLACE FUNCTION tessera_listed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  plans json;
  planned int;
  unplanned boolean;
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    PERFORM pg_notify('tessera_invalidate', '{"l":"all"}');
    RETURN NULL;
  END IF;
  SELECT json_agg(DISTINCT plan_id) FILTER (WHERE plan_id IS NOT NULL),
         count(DISTINCT plan_id), coalesce(bool_or(plan_id IS NULL), false)
    INTO plans, planned, unplanned FROM written;
  IF unplanned OR planned > 100 THEN
    PERFORM pg_notify('tessera_invalidate', '{"l":"all"}');
  ELSIF planned > 0 THEN
    PERFORM pg_notify('tessera_invalidate', json_build_object('l', plans)::text);
  END IF;
  RETURN NULL;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION)
    for table in _TABLES:
        op.execute(f"CREATE TRIGGER {table}_listed AFTER INSERT ON {table}"
                   " REFERENCING NEW TABLE AS written"
                   " FOR EACH STATEMENT EXECUTE FUNCTION tessera_listed()")
        op.execute(f"CREATE TRIGGER {table}_unlisted AFTER DELETE ON {table}"
                   " REFERENCING OLD TABLE AS written"
                   " FOR EACH STATEMENT EXECUTE FUNCTION tessera_listed()")
        op.execute(f"CREATE TRIGGER {table}_emptied AFTER TRUNCATE ON {table}"
                   " FOR EACH STATEMENT EXECUTE FUNCTION tessera_listed()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _TABLES:
        for name in ("listed", "unlisted", "emptied"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_{name} ON {table}")
    op.execute("DROP FUNCTION IF EXISTS tessera_listed()")
