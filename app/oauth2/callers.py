"""Rule 6 for an integration as a caller: the access decision its tokens get applies to the
integration itself at every endpoint where it authenticates (token, introspection, revocation,
authorize).

- Before any plan is named, a caller is refused by what holds in every plan: its review is
  revoked, or it is subject to review, unapproved, past its deadline and without a running
  exception. A custom integration is also judged by its installation in its own plan, the only
  plan it has.
- In a plan (the plan of a token it introspects or revokes), a third-party caller must be
  installed there and allowed; a custom one must be of that plan. Only a platform resource
  server (kind `platform`: registered by operators, first-party, not subject to review) sees
  every plan.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from authlib.oauth2.rfc6749.errors import UnauthorizedClientError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.integrations import placement as placements
from app.integrations.access import Access, Rule, decide
from app.integrations.service import facts_of
from app.oauth2.clients import ClientFacts
from app.tokens.cache import TokenCache

PLATFORM = "platform"
log = logging.getLogger("tessera.oauth2")


def standing(caller: ClientFacts, now: datetime) -> Access:
    """The caller's access whatever the plan: pure, nothing logged (`refusal` logs)."""
    state = caller.installation_state if caller.kind == "custom" else "active"
    return decide(facts_of(caller), state, now)


def refusal(caller: ClientFacts, now: datetime) -> Access | None:
    """The rule that refuses this caller whatever the plan, or None."""
    access = standing(caller, now)
    if access.allowed:
        return None
    log.info("integration refused", extra={"event": "integration_refused",
                                           "client_id": caller.client_id, "rule": access.rule})
    return access


def description(access: Access) -> str:
    """A refusal in words for the client: the rule, what it means, and any deadline (ASCII, as
    RFC 6749 §5.2 requires of `error_description`)."""
    text = f"{access.rule}: {access.describe()}"
    if access.deadline is not None:
        text += f" (deadline {access.deadline.isoformat()})"
    return text


def refused(access: Access, *, status_code: int = 400) -> UnauthorizedClientError:
    """RFC 6749 §5.2 `unauthorized_client`, its description naming the rule and any deadline
    (the refusal the integration's tokens get, in the OAuth shape)."""
    return UnauthorizedClientError(description=description(access), status_code=status_code)


def access_known(caller: ClientFacts, plan_id: uuid.UUID) -> Access | None:
    """`access_in` where the caller alone decides it (the platform's callers, custom
    integrations), or None where its installation in the plan must be read."""
    if caller.kind == PLATFORM:
        return Access(True)
    if caller.plan_id is not None:  # custom: its own plan, where `refusal` judged it
        return Access(True) if caller.plan_id == plan_id else Access(False, Rule.not_installed)
    return None


async def access_in(caller: ClientFacts, plan_id: uuid.UUID, now: datetime,
                    cache: TokenCache | None, engine: AsyncEngine) -> Access:
    """May this caller (not refused as a whole: `refusal`) act on tokens of `plan_id`?"""
    known = access_known(caller, plan_id)
    if known is not None:
        return known
    found = await placements.in_plan(engine, cache, caller.id, plan_id)
    return decide(facts_of(caller), found.state if found else None, now)
