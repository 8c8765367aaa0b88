"""What the management API shows of a user (`UserOut`), read as columns. A user's facts are
fixed when the user is made: no call changes an email, a name or a role, and no user is
removed, so they can be kept as long as memory allows (the token cache keeps them beside the
tokens)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select

from app.users.models import User
from app.users.schemas import UserOut

# Built once, with a bound parameter: a call costs no statement construction.
COLUMNS = tuple(getattr(User, name) for name in UserOut.model_fields)
BY_ID = select(*COLUMNS).where(User.id == bindparam("user_id"))


def of(user: Any) -> UserOut:  # noqa: ANN401 - a row of COLUMNS, or a User
    return UserOut.model_validate(user, from_attributes=True)
