"""Integrations: third-party ones registered by platform operators, custom ones by plan admins,
and the access tokens a plan admin generates for a custom integration."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body
from sqlalchemy import select

from app.api.deps import AppSettings, Now, Session
from app.auth.dependencies import CurrentPrincipal
from app.errors import InvalidRequest, NotFound
from app.integrations import service
from app.integrations.models import Integration
from app.integrations.schemas import (
    IntegrationIn,
    IntegrationOut,
    IntegrationTokenIn,
    IssuedIntegrationOut,
)
from app.oauth2 import scopes as catalogue
from app.tokens import repository
from app.tokens import service as tokens
from app.tokens.rules import TokenKind
from app.tokens.schemas import IssuedTokenOut, TokenOut

router = APIRouter(tags=["integrations"])


@router.post("/v1/integrations", status_code=201, response_model=IssuedIntegrationOut)
async def register_third_party(body: IntegrationIn, principal: CurrentPrincipal,
                               session: Session, settings: AppSettings, now: Now):
    """Platform operators register a third-party integration; its review starts now (rule 6)."""
    principal.require_operator()
    integ, secret = await service.create_third_party(
        session, body, actor=principal.actor, now=now,
        review_deadline=now + timedelta(days=settings.review_period_days))
    return IssuedIntegrationOut(**service.out(integ).model_dump(), client_secret=secret)


@router.get("/v1/integrations", response_model=list[IntegrationOut])
async def list_all_integrations(principal: CurrentPrincipal, session: Session):
    principal.require_operator()
    rows = (await session.execute(select(Integration).order_by(Integration.created_at))).scalars()
    return [service.out(i) for i in rows]


@router.post("/v1/plans/{plan_id}/integrations", status_code=201,
             response_model=IssuedIntegrationOut)
async def create_custom_integration(plan_id: uuid.UUID, body: IntegrationIn,
                                    principal: CurrentPrincipal, session: Session, now: Now):
    principal.require_plan_admin(plan_id, write=True)
    integ, secret = await service.create_custom(session, plan_id, body, actor=principal.actor,
                                                user_id=principal.user_id, now=now)
    return IssuedIntegrationOut(**service.out(integ).model_dump(), client_secret=secret)


@router.post("/v1/plans/{plan_id}/integrations/{integration_id}/tokens", status_code=201,
             response_model=IssuedTokenOut)
async def generate_integration_token(
    plan_id: uuid.UUID, integration_id: uuid.UUID, principal: CurrentPrincipal,
    session: Session, now: Now, body: Annotated[IntegrationTokenIn | None, Body()] = None,
):
    """The token an admin pastes into an in-house integration. It has no intrinsic lifetime:
    the plan's period bounds it like any token (rule 2)."""
    principal.require_plan_admin(plan_id, write=True)
    integ = await session.get(Integration, integration_id)
    if integ is None or integ.kind != "custom" or integ.plan_id != plan_id:
        raise NotFound("no such custom integration in this plan")
    wanted = (body.scopes if body and body.scopes is not None else list(integ.scopes))
    if any(s not in integ.scopes for s in wanted):
        raise InvalidRequest("the scopes exceed the integration's permissions",
                             code="invalid_scope", allowed=integ.scopes)
    token, secret = tokens.issue(
        session, kind=TokenKind.integration, plan_id=plan_id, integration_id=integ.id,
        scopes=catalogue.join(wanted), name=(body.name if body else None) or integ.name,
        now=now, created_by=principal.user_id)
    await session.flush()
    stored = await repository.find_by_id(session, token.id)
    return IssuedTokenOut(**TokenOut.of(stored, now).model_dump(), token=secret)
