from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.api.types import Input


class UserIn(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "email": "ada@example.com", "name": "Ada", "role": "member",
        "password": "a long passphrase"}]})

    email: str = Field(min_length=3, max_length=320)
    name: str = Field(min_length=1, max_length=200)
    role: Literal["member", "admin"] = "member"
    password: str = Field(min_length=8, max_length=1024)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        value = value.strip().lower()
        local, at, domain = value.partition("@")
        if not at or not local or "." not in domain or " " in value:
            raise ValueError("not an email address")
        return value


class UserOut(BaseModel):
    # Kept in the token cache and handed to every request that asks (`app.users.facts`):
    # nobody may change one.
    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    plan_id: uuid.UUID
    email: str
    name: str
    role: str
    created_at: datetime
