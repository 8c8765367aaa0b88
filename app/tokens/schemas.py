from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.tokens.repository import StoredToken
from app.tokens.rules import check


class PersonalTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)


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
