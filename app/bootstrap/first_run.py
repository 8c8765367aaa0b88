"""First set-up: a plan, its system admin, and a personal token, printed once."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from sqlalchemy import func, select

from app import credentials
from app.clock import SystemClock
from app.config import Settings
from app.credentials import SecretKind
from app.db import make_engine, make_sessionmaker, session_scope
from app.operators.models import Operator
from app.plans.models import Plan
from app.tokens import service as tokens
from app.tokens.rules import TokenKind
from app.users import service as users


async def bootstrap(settings: Settings, *, plan: str, admin_email: str,
                    admin_password: str | None, if_empty: bool) -> dict[str, Any] | None:
    engine = make_engine(settings.database_url, pool_size=1)
    now = SystemClock().now()
    password = admin_password or secrets.token_urlsafe(12)
    try:
        async with session_scope(make_sessionmaker(engine)) as session:
            if if_empty and (await session.execute(select(func.count(Plan.id)))).scalar_one():
                return None
            new_plan = Plan(id=uuid.uuid4(), name=plan, created_at=now)
            session.add(new_plan)
            await session.flush()
            admin = await users.create(session, plan_id=new_plan.id, email=admin_email,
                                       name="System admin", role="admin", password=password,
                                       actor="system:bootstrap", now=now)
            _token, secret = tokens.issue(session, kind=TokenKind.personal, plan_id=new_plan.id,
                                          user_id=admin.id, name="bootstrap", now=now,
                                          created_by=admin.id)
            return {"plan_id": str(new_plan.id), "plan": plan, "admin_user_id": str(admin.id),
                    "admin_email": admin.email, "admin_password": password,
                    "admin_token": secret}
    finally:
        await engine.dispose()


async def create_operator(settings: Settings, email: str) -> dict[str, Any]:
    engine = make_engine(settings.database_url, pool_size=1)
    secret = credentials.generate(SecretKind.operator)
    try:
        async with session_scope(make_sessionmaker(engine)) as session:
            op = Operator(id=uuid.uuid4(), email=email.strip().lower(),
                          token_digest=credentials.digest(secret),
                          token_hint=credentials.hint(secret), created_at=SystemClock().now())
            session.add(op)
        return {"operator_id": str(op.id), "email": op.email, "operator_token": secret}
    finally:
        await engine.dispose()


def howto(result: dict[str, Any], base: str) -> str:
    """Examples a newcomer can paste as they are: ids filled in, a newline after each answer,
    the client made for introspection read back with Python (no jq needed)."""
    t, p = result["admin_token"], result["plan_id"]
    c = "curl -sS -w '\\n'"
    return f"""
Tessera is set up. The secrets above are shown once; keep them.

  export TOKEN={t}

  # who am I
  {c} {base}/v1/me -H "Authorization: Bearer $TOKEN"
  # the plan's token expiration period: preview 1 hour, set 90 days, read it back
  {c} -X POST {base}/v1/plans/{p}/token-expiration/preview \\
       -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
       -d '{{"value": 1, "unit": "hours"}}'
  {c} -X PUT {base}/v1/plans/{p}/token-expiration -H "Authorization: Bearer $TOKEN" \\
       -H 'Content-Type: application/json' -d '{{"value": 90, "unit": "days"}}'
  {c} {base}/v1/plans/{p}/token-expiration -H "Authorization: Bearer $TOKEN"
  # your personal tokens, with their effective expiry
  {c} {base}/v1/me/tokens -H "Authorization: Bearer $TOKEN"
  # a client for your gateway (its secret is shown once), then introspect the token with it
  CLIENT=$(curl -sS -X POST {base}/v1/plans/{p}/integrations \\
       -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
       -d '{{"name": "edge gateway", "can_introspect": true}}')
  FIELD='import json, sys; print(json.load(sys.stdin)[sys.argv[1]])'
  CLIENT_ID=$(printf '%s' "$CLIENT" | python3 -c "$FIELD" client_id)
  CLIENT_SECRET=$(printf '%s' "$CLIENT" | python3 -c "$FIELD" client_secret)
  {c} -u "$CLIENT_ID:$CLIENT_SECRET" {base}/oauth2/introspect -d "token=$TOKEN"
  # the forward-auth check a gateway calls on every request
  {c} {base}/v1/gateway/check -H "Authorization: Bearer $TOKEN" -D - -o /dev/null

Health: {base}/healthz  Ready: {base}/readyz  Metrics: {base}/metrics
API reference: {base}/docs   OpenAPI: {base}/openapi.json
"""
