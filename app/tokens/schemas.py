from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.plans.expiry import add_period
from app.tokens.repository import StoredToken
from app.tokens.rules import Inactive, check


class PersonalTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # No control characters: a name is shown in listings and mails, and PostgreSQL stores no NUL.
    name: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")


class TokenOut(BaseModel):
    id: uuid.UUID
    kind: str
    name: str | None
    hint: str = Field(description="the token's last four characters")
    scopes: list[str]
    created_at: datetime = Field(description="original generation time")
    expires_at: datetime | None = Field(description="effective expiry; null: never")
    status: str = Field(description="active | expired | revoked | rotated | integration_refused")
    revoked_at: datetime | None = None
    revoked_reason: str | None = None
    user_id: uuid.UUID | None = None
    integration_id: uuid.UUID | None = None
    client_id: str | None = None

    @classmethod
    def of(cls, stored: StoredToken, now: datetime) -> TokenOut:
        verdict = check(stored.facts, now)
        return cls(
            id=stored.id, kind=stored.kind, name=stored.name, hint=stored.hint,
            scopes=stored.scopes.split(), created_at=stored.issued_at, expires_at=verdict.expiry,
            status="active" if verdict.active else str(verdict.reason),
            revoked_at=stored.revoked_at, revoked_reason=stored.revoked_reason,
            user_id=stored.user_id, integration_id=stored.integration_id,
            client_id=stored.client_id,
        )


class IssuedTokenOut(TokenOut):
    token: str = Field(description="the secret; shown this once and never again")


class TokenList(BaseModel):
    items: list[TokenOut]
    limit: int
    offset: int


class TokenStatusOut(BaseModel):
    """Why a token is, or is not, active: the answer a user or admin asks for."""

    id: uuid.UUID
    active: bool
    status: str
    expires_at: datetime | None
    explanation: str
    expired_since: datetime | None = None
    period: str | None = Field(default=None, description="the plan period that applied")
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoked_reason: str | None = None
    rule: str | None = Field(default=None, description="the integration rule that refused it")
    deadline: datetime | None = None

    @classmethod
    def of(cls, stored: StoredToken, now: datetime) -> TokenStatusOut:
        v = check(stored.facts, now)
        base = {"id": stored.id, "active": v.active, "expires_at": v.expiry,
                "status": "active" if v.active else str(v.reason)}
        period = stored.facts.period
        if v.active:
            text = (f"active until {v.expiry.isoformat()}" if v.expiry else
                    "active; it does not expire unless revoked")
            return cls(**base, explanation=text, period=period.describe() if period else None)
        match v.reason:
            case Inactive.revoked:
                return cls(**base, revoked_at=stored.revoked_at, revoked_by=stored.revoked_by,
                           revoked_reason=stored.revoked_reason,
                           explanation=f"revoked at {stored.revoked_at.isoformat()} by "
                                       f"{stored.revoked_by}: {stored.revoked_reason}")
            case Inactive.rotated:
                return cls(**base, explanation="this refresh token was exchanged for a new one")
            case Inactive.expired:
                by_policy = period is not None and v.expiry == add_period(stored.issued_at,
                                                                          period)
                text = (f"expired at {v.expiry.isoformat()} under the plan's expiration period "
                        f"of {period.describe()}, counted from its generation at "
                        f"{stored.issued_at.isoformat()}" if by_policy and period else
                        f"its own lifetime ended at {v.expiry.isoformat()}")
                return cls(**base, expired_since=v.expiry, explanation=text,
                           period=period.describe() if by_policy and period else None)
        access = v.access
        return cls(**base, rule=access.rule if access else None,
                   deadline=access.deadline if access else None,
                   explanation=f"refused: {access.describe()}" if access else "refused")
