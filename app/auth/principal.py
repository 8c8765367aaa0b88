"""Who is calling the management API, and what they may do."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.errors import Forbidden, NotFound

if TYPE_CHECKING:
    from app.tokens.repository import StoredToken
    from app.users.schemas import UserOut

DERIVED = frozenset({"access", "integration"})


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # user | client | operator
    plan_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    role: str | None = None
    operator_id: uuid.UUID | None = None
    integration_id: uuid.UUID | None = None
    token_id: uuid.UUID | None = None
    # None: every permission the principal's role has (personal tokens, password login).
    scopes: frozenset[str] | None = None
    # What the caller authenticated with: the user's own credentials (`personal` token,
    # `password`), a token derived from another credential (`access`: OAuth, `integration`),
    # or an `operator` token.
    credential: str = "personal"
    # What was read to authenticate a bearer token, for handlers to use rather than read again:
    # the user's facts, and the token's (its plan's period among them, as fresh as any check's).
    user: UserOut | None = None
    token: StoredToken | None = None

    @property
    def actor(self) -> str:
        if self.kind == "operator":
            return f"operator:{self.operator_id}"
        if self.kind == "user":
            return f"user:{self.user_id}"
        return f"integration:{self.integration_id}"

    def allows(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes

    def require_scope(self, scope: str) -> None:
        if not self.allows(scope):
            raise Forbidden(f"this token lacks the '{scope}' permission", code="insufficient_scope",
                            required_scope=scope)

    def require_user(self) -> uuid.UUID:
        if self.kind != "user" or self.user_id is None:
            raise Forbidden("this call is made by a user, not an integration", code="user_required")
        return self.user_id

    def require_operator(self) -> uuid.UUID:
        if self.kind != "operator" or self.operator_id is None:
            raise Forbidden("platform operators only", code="operator_required")
        return self.operator_id

    @property
    def derived(self) -> bool:
        """Authenticated with a token derived from another credential (rule 11)."""
        return self.credential in DERIVED

    def require_own_credentials(self, what: str) -> None:
        """Rule 11: what creates a credential or lengthens a life (a personal or integration
        token, a user, an integration, the plan's period, an installation's reactivation) is
        done with the user's own credentials only, never with an OAuth or integration token,
        whatever its scopes: what such a token made would outrank or outlive it."""
        if self.derived:
            raise Forbidden(f"{what} needs the user's own credentials (a personal token or the "
                            "password), not an OAuth or integration token",
                            code="personal_credentials_required")

    def require_plan_admin(self, plan_id: uuid.UUID, *, write: bool) -> None:
        """Rule 9: another plan looks exactly like a plan that does not exist."""
        if self.plan_id != plan_id:
            raise NotFound("no such plan")
        if self.kind == "user" and self.role != "admin":
            raise Forbidden("only a system admin of this plan may do this", code="admin_required")
        self.require_scope("plan:admin" if write else "plan:read")
