"""Integrations: a plan admin's custom ones."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from app.api.deps import Now, Session
from app.auth.dependencies import CurrentPrincipal
from app.integrations import service
from app.integrations.schemas import IntegrationIn, IssuedIntegrationOut

router = APIRouter(tags=["integrations"])


@router.post("/v1/plans/{plan_id}/integrations", status_code=201,
             response_model=IssuedIntegrationOut)
async def create_custom_integration(plan_id: uuid.UUID, body: IntegrationIn,
                                    principal: CurrentPrincipal, session: Session, now: Now):
    principal.require_plan_admin(plan_id, write=True)
    integ, secret = await service.create_custom(session, plan_id, body, actor=principal.actor,
                                                user_id=principal.user_id, now=now)
    return IssuedIntegrationOut(**service.out(integ).model_dump(), client_secret=secret)
