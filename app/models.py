"""Every mapped table, imported once so `Base.metadata` is complete (Alembic, tests)."""

from app.audit.models import AuditEvent
from app.db import Base
from app.integrations.models import Installation, Integration
from app.notifications.models import OutboxMessage
from app.oauth2.models import AuthorizationCode
from app.oauth2.proofs import UsedProof
from app.operators.models import Operator
from app.plans.models import PastPeriod, Plan
from app.throttle.models import Throttle
from app.tokens.models import Token
from app.users.models import User

__all__ = [
    "AuditEvent",
    "AuthorizationCode",
    "Base",
    "Installation",
    "Integration",
    "Operator",
    "OutboxMessage",
    "PastPeriod",
    "Plan",
    "Throttle",
    "Token",
    "UsedProof",
    "User",
]
