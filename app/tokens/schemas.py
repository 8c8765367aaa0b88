from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from app.api.types import Input
from app.plans.expiry import Death, Spell, death
from app.tokens.repository import StoredToken
from app.tokens.rules import Inactive, Verdict, check


class PersonalTokenIn(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "ci"}]})

    # No control characters: a name is shown in listings and mails, and PostgreSQL stores no NUL.
    name: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")


class _TokenFields(BaseModel):
    """What is shown of a token: `TokenOut`, and `IssuedTokenOut` with the secret. Two
    siblings, not a class and its subclass, so that no value of a field declared `TokenOut`
    can carry a secret (and its renderings stay plain: `app.api.responses`)."""

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
    def of(cls, stored: StoredToken, now: datetime, history: list[Spell] | None = None, *,
           verdict: Verdict | None = None, **more: str) -> Self:
        """`history`: the plan's periods (`plans.service.history`), for when an expired token
        died; needed for any token that may have. `verdict`: `check(stored.facts, now)`, when
        the caller has it already. `more`: the fields of a subclass (the secret of
        `IssuedTokenOut`)."""
        return cls(**fields_of(stored, now, history, verdict=verdict), **more)


def fields_of(stored: StoredToken, now: datetime, history: list[Spell] | None = None, *,
              verdict: Verdict | None = None) -> dict[str, Any]:
    """What `TokenOut.of` shows of a token, as values of the types its fields declare: a
    listing renders them as they are (`Rendered.fields`), without a model per row."""
    verdict = verdict or check(stored.facts, now)
    died = _death(stored, verdict, now, history)
    return {
        "id": stored.id, "kind": stored.kind, "name": stored.name, "hint": stored.hint,
        "scopes": stored.scopes.split(), "created_at": stored.issued_at,
        "expires_at": died.at if died else verdict.expiry,
        "status": "active" if verdict.active else str(verdict.reason),
        "revoked_at": stored.revoked_at, "revoked_reason": stored.revoked_reason,
        "user_id": stored.user_id, "integration_id": stored.integration_id,
        "client_id": stored.client_id,
    }


class TokenOut(_TokenFields):
    pass


class IssuedTokenOut(_TokenFields):
    token: str = Field(description="the secret; shown this once and never again")


class TokenList(BaseModel):
    items: list[TokenOut]
    limit: int
    offset: int


def _death(stored: StoredToken, verdict: Verdict, now: datetime,
           history: list[Spell] | None) -> Death | None:
    if verdict.reason is not Inactive.expired or history is None:
        return None
    return death(stored.issued_at, stored.expires_at, history, now)


class TokenStatusOut(BaseModel):
    """Why a token is, or is not, active: the answer a user or admin asks for."""

    id: uuid.UUID
    active: bool
    status: str
    expires_at: datetime | None
    explanation: str
    expired_since: datetime | None = None
    period: str | None = Field(default=None, description="the plan period that applied")
    period_set_at: datetime | None = Field(
        default=None, description="when that period was set")
    final: bool = Field(default=False, description="expired for good: no later change of the "
                                                   "plan's period brings it back")
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoked_reason: str | None = None
    rule: str | None = Field(default=None, description="the integration rule that refused it")
    deadline: datetime | None = None

    @classmethod
    def of(cls, stored: StoredToken, now: datetime, history: list[Spell]) -> TokenStatusOut:
        v = check(stored.facts, now)
        base = {"id": stored.id, "active": v.active, "expires_at": v.expiry,
                "status": "active" if v.active else str(v.reason)}
        period = stored.facts.period
        if v.active:
            text = (f"active until {v.expiry.isoformat()}, when it expires for good"
                    if v.expiry else "active; it does not expire unless revoked")
            return cls(**base, explanation=text, period=period.describe() if period else None,
                       period_set_at=stored.period_since if period else None)
        match v.reason:
            case Inactive.revoked:
                return cls(**base, revoked_at=stored.revoked_at, revoked_by=stored.revoked_by,
                           revoked_reason=stored.revoked_reason, final=True,
                           explanation=f"revoked at {stored.revoked_at.isoformat()} by "
                                       f"{stored.revoked_by}: {stored.revoked_reason}")
            case Inactive.rotated:
                return cls(**base, final=True,
                           explanation="this refresh token was exchanged for a new one")
            case Inactive.expired:
                died = death(stored.issued_at, stored.expires_at, history, now)
                return cls(**{**base, "expires_at": died.at if died else v.expiry},
                           **_expired(stored, died))
        access = v.access
        return cls(**base, rule=access.rule if access else None,
                   deadline=access.deadline if access else None,
                   explanation=f"refused: {access.describe()}" if access else "refused")


def _expired(stored: StoredToken, died: Death | None) -> dict:
    """Rule 4, in words: when it died, under which period set when, and that it is final."""
    if died is None:  # a cut-off with no period on record (not reached through the service)
        return {"final": True, "explanation": "expired for good under an earlier period of "
                                              "the plan"}
    at = died.at.isoformat()
    generated = stored.issued_at.isoformat()
    if died.spell is None:
        text = f"expired for good on {at}: its own lifetime ended then"
        return {"final": True, "expired_since": died.at, "explanation": text}
    period = died.spell.period.describe()
    set_at = died.spell.since
    if died.cut_short and set_at is not None:
        text = (f"expired for good on {at} because the plan's period was set to {period} on "
                f"{set_at.isoformat()}: counted from its generation on {generated}, that "
                "period had already run out")
    else:
        text = (f"expired for good on {at} under the plan's expiration period of {period}, "
                f"counted from its generation on {generated}")
    return {"final": True, "expired_since": died.at, "explanation": text, "period": period,
            "period_set_at": set_at}


class GrantOut(BaseModel):
    """An app the user connected through OAuth (their live grants to it)."""

    integration_id: uuid.UUID
    client_id: str | None
    name: str
    scopes: list[str]
    authorized_at: datetime
    last_used_at: datetime
    grants: int


class GrantList(BaseModel):
    items: list[GrantOut]
