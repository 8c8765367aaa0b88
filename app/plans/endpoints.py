"""`/v1/plans/{plan_id}/token-expiration`: the plan's one expiration period (rules 1-4)."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import Request, Response

from app.api.deps import Now, Session
from app.api.responses import Rendered
from app.api.routing import api_router
from app.auth.dependencies import CurrentPrincipal
from app.plans import service
from app.plans.expiry import Period
from app.plans.models import Plan
from app.plans.schemas import (
    DPoPPolicy,
    DyingTokenOut,
    PeriodIn,
    PeriodOut,
    PolicyOut,
    PreviewOut,
)

router = api_router(prefix="/v1/plans/{plan_id}/token-expiration", tags=["token expiration"])

FINAL = ("Expiry is final: a token the period expires is dead for good. Lengthening or removing "
         "the period later spares only tokens that have not expired yet.")


def _policy(plan: Plan | service.PolicyRow) -> PolicyOut:
    return _policy_of(plan.id, service.period_of(plan), plan.policy_updated_at,
                      plan.expired_through)


def _policy_of(plan_id: uuid.UUID, period: Period | None, updated_at: datetime | None,
               expired_through: datetime | None) -> PolicyOut:
    return PolicyOut(
        plan_id=plan_id,
        period=PeriodOut(value=period.value, unit=period.unit) if period else None,
        description=(f"tokens expire {period.describe()} after they were generated"
                     if period else "tokens do not expire by policy; they live until revoked"),
        updated_at=updated_at,
        expired_through=expired_through,
    )


@router.get("", response_model=PolicyOut)
async def read_policy(plan_id: uuid.UUID, principal: CurrentPrincipal, session: Session):
    principal.require_plan_admin(plan_id, write=False)
    token = principal.token
    if token is not None and token.plan_id == plan_id:
        # The caller's token was judged by its plan's period: the same facts, as fresh as any
        # token check's (a change evicts them on every replica), and no read more.
        return Rendered(_policy_of(plan_id, token.facts.period, token.period_since,
                                   token.facts.expired_through))
    return Rendered(_policy(await service.get_plan(session, plan_id)))


@router.put("", response_model=PolicyOut)
async def set_policy(plan_id: uuid.UUID, body: PeriodIn, principal: CurrentPrincipal,
                     session: Session, now: Now, request: Request):
    principal.require_plan_admin(plan_id, write=True)
    principal.require_own_credentials("changing the plan's token expiration period")
    return Rendered(_policy(await service.set_period(
        session, plan_id, body.period(), principal, now,
        policies=request.app.state.plan_policies)))


@router.delete("", status_code=204)
async def remove_policy(plan_id: uuid.UUID, principal: CurrentPrincipal, session: Session,
                        now: Now) -> Response:
    principal.require_plan_admin(plan_id, write=True)
    principal.require_own_credentials("changing the plan's token expiration period")
    await service.remove_period(session, plan_id, principal, now)
    return Response(status_code=204)


@router.post("/preview", response_model=PreviewOut)
async def preview_policy(plan_id: uuid.UUID, body: PeriodIn, principal: CurrentPrincipal,
                         session: Session, now: Now):
    principal.require_plan_admin(plan_id, write=False)
    counts, dying = await service.preview(session, plan_id, body.period(), now)
    return PreviewOut(
        plan_id=plan_id, period=PeriodOut(value=body.value, unit=body.unit), evaluated_at=now,
        expire_immediately=counts.expire_immediately,
        expire_within_7_days=counts.expire_within_7_days, expire_later=counts.expire_later,
        never_expire=counts.never_expire,
        dying=[DyingTokenOut(id=d.token_id, kind=d.kind, name=d.name, hint=d.hint,
                             user_id=d.user_id, user_email=d.user_email,
                             created_at=d.issued_at, dies_at=d.dies_at) for d in dying],
        dying_truncated=counts.expire_immediately + counts.expire_within_7_days > len(dying),
        final=FINAL)


dpop_router = api_router(prefix="/v1/plans/{plan_id}/dpop", tags=["token expiration"])


@dpop_router.get("", response_model=DPoPPolicy)
async def read_dpop_policy(plan_id: uuid.UUID, principal: CurrentPrincipal, session: Session):
    """Whether the plan's custom integrations must prove possession of a key (RFC 9449)."""
    principal.require_plan_admin(plan_id, write=False)
    plan = await service.get_plan(session, plan_id)
    return DPoPPolicy(required_for_custom_integrations=plan.dpop_required)


@dpop_router.put("", response_model=DPoPPolicy)
async def set_dpop_policy(plan_id: uuid.UUID, body: DPoPPolicy, principal: CurrentPrincipal,
                          session: Session, now: Now):
    """Require DPoP for every custom integration of the plan: their token requests without a
    proof are refused and their access tokens are bound, as if each were registered with
    `dpop_bound_access_tokens`. Tokens issued before are left as they are."""
    principal.require_plan_admin(plan_id, write=True)
    principal.require_own_credentials("changing the plan's DPoP policy")
    plan = await service.set_dpop_required(session, plan_id,
                                           body.required_for_custom_integrations, principal,
                                           now)
    return DPoPPolicy(required_for_custom_integrations=plan.dpop_required)
