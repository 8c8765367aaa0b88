"""What the management API shows of a user. A user's facts are fixed when the user is made: no
call changes an email, a name or a role, and no user is removed, so they can be kept as long
as memory allows (the token cache keeps them beside the tokens)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select

from app.users.models import User


@dataclass(frozen=True, slots=True)
class UserFacts:
    id: uuid.UUID
    plan_id: uuid.UUID
    email: str
    name: str
    role: str
    created_at: datetime


# Built once, with a bound parameter: a call costs no statement construction.
COLUMNS = (User.id, User.plan_id, User.email, User.name, User.role, User.created_at)
BY_ID = select(*COLUMNS).where(User.id == bindparam("user_id"))
