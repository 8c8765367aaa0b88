"""Integrations: third-party ones registered by platform operators, custom ones by plan admins,
and the access tokens a plan admin generates for a custom integration."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import Body, Request, Response
from sqlalchemy import select

from app.api.deps import AppSettings, Now, Session
from app.api.responses import Rendered
from app.api.routing import api_router
from app.audit import service as audit
from app.auth.dependencies import CurrentPrincipal
from app.errors import InvalidRequest, NotFound
from app.integrations import lifecycle, service
from app.integrations.models import Integration
from app.integrations.schemas import (
    DPoPBoundIn,
    ExceptionIn,
    ExceptionRefusalIn,
    ExceptionRequestIn,
    ExceptionRequestOut,
    InstallationOut,
    IntegrationIn,
    IntegrationOut,
    IntegrationTokenIn,
    IssuedIntegrationOut,
    JudgementIn,
    OperatorIntegrationIn,
    ReportIn,
    ReportOut,
    ReviewIn,
    ReviewOut,
)
from app.oauth2 import scopes as catalogue
from app.tokens import repository
from app.tokens import service as tokens
from app.tokens.rules import TokenKind
from app.tokens.schemas import IssuedTokenOut

router = api_router(tags=["integrations"])


@router.post("/v1/integrations", status_code=201, response_model=IssuedIntegrationOut)
async def register_third_party(body: OperatorIntegrationIn, principal: CurrentPrincipal,
                               session: Session, settings: AppSettings, now: Now):
    """Platform operators register a third-party integration, whose review starts now (rule 6),
    or (`kind: platform`) a resource server of the platform's own, which introspects tokens of
    every plan."""
    principal.require_operator()
    integ, secret = await service.create_by_operator(
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
    principal.require_own_credentials("creating an integration")
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
    principal.require_own_credentials("generating an integration token")
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
    await audit.record(session, principal.actor, "token.created", plan_id, "token", token.id,
                       now, kind="integration", integration_id=str(integ.id),
                       scopes=token.scopes, via=principal.credential)
    await session.flush()
    stored = await repository.find_by_id(session, token.id)
    return IssuedTokenOut.of(stored, now, token=secret)


# --- the platform review (operators) --------------------------------------------------------

@router.get("/v1/integrations/{integration_id}", response_model=ReviewOut)
async def read_integration(integration_id: uuid.UUID, principal: CurrentPrincipal,
                           session: Session):
    principal.require_operator()
    return lifecycle.review_out(await service.get(session, integration_id))


@router.put("/v1/integrations/{integration_id}/review", response_model=ReviewOut)
async def change_review(integration_id: uuid.UUID, body: ReviewIn, principal: CurrentPrincipal,
                        session: Session, now: Now, settings: AppSettings):
    principal.require_operator()
    integ = await lifecycle.set_review(session, integration_id, body, actor=principal.actor,
                                       now=now, base_url=settings.issuer)
    return lifecycle.review_out(integ)


@router.put("/v1/integrations/{integration_id}/exception", response_model=ReviewOut)
async def grant_exception(integration_id: uuid.UUID, body: ExceptionIn,
                          principal: CurrentPrincipal, session: Session, now: Now,
                          settings: AppSettings):
    principal.require_operator()
    integ = await lifecycle.set_exception(session, integration_id, body.until,
                                          actor=principal.actor, now=now,
                                          base_url=settings.issuer)
    return lifecycle.review_out(integ)


@router.delete("/v1/integrations/{integration_id}/exception", response_model=ReviewOut)
async def withdraw_exception(integration_id: uuid.UUID, principal: CurrentPrincipal,
                             session: Session, now: Now):
    principal.require_operator()
    integ = await lifecycle.set_exception(session, integration_id, None, actor=principal.actor,
                                          now=now)
    return lifecycle.review_out(integ)


@router.put("/v1/integrations/{integration_id}/judgement", response_model=ReviewOut)
async def judge_third_party(integration_id: uuid.UUID, body: JudgementIn,
                            principal: CurrentPrincipal, session: Session, now: Now,
                            settings: AppSettings):
    principal.require_operator()
    integ = await lifecycle.judge(session, integration_id, body, actor=principal.actor, now=now,
                                  base_url=settings.issuer)
    return lifecycle.review_out(integ)


@router.delete("/v1/integrations/{integration_id}/judgement", response_model=ReviewOut)
async def withdraw_judgement(integration_id: uuid.UUID, principal: CurrentPrincipal,
                             session: Session, now: Now):
    principal.require_operator()
    integ = await lifecycle.judge(session, integration_id, None, actor=principal.actor, now=now)
    return lifecycle.review_out(integ)


@router.get("/v1/integrations/{integration_id}/reports", response_model=list[ReportOut])
async def list_reports(integration_id: uuid.UUID, principal: CurrentPrincipal,
                       session: Session):
    principal.require_operator()
    await service.get(session, integration_id)
    return await lifecycle.reports(session, integration_id)


# --- installations (plan admins) ------------------------------------------------------------

@router.get("/v1/plans/{plan_id}/integrations", response_model=list[InstallationOut])
async def list_plan_integrations(plan_id: uuid.UUID, principal: CurrentPrincipal,
                                 session: Session, now: Now, request: Request):
    """Every integration enabled in the plan, those needing attention first."""
    principal.require_plan_admin(plan_id, write=False)
    return Rendered(await lifecycle.list_for_plan(session, plan_id, now,
                                                  request.app.state.token_cache))


@router.post("/v1/plans/{plan_id}/integrations/{integration_id}/deactivate",
             response_model=InstallationOut)
async def deactivate_installation(plan_id: uuid.UUID, integration_id: uuid.UUID,
                                  principal: CurrentPrincipal, session: Session, now: Now):
    principal.require_plan_admin(plan_id, write=True)
    return await lifecycle.deactivate(session, plan_id, integration_id, actor=principal.actor,
                                      now=now, reason="deactivated by a plan admin")


@router.post("/v1/plans/{plan_id}/integrations/{integration_id}/reactivate",
             response_model=InstallationOut)
async def reactivate_installation(plan_id: uuid.UUID, integration_id: uuid.UUID,
                                  principal: CurrentPrincipal, session: Session, now: Now):
    principal.require_plan_admin(plan_id, write=True)
    principal.require_own_credentials("reactivating an installation")
    return await lifecycle.reactivate(session, plan_id, integration_id, actor=principal.actor,
                                      now=now)


@router.post("/v1/plans/{plan_id}/integrations/{integration_id}/confirm-keep",
             response_model=InstallationOut)
async def confirm_keep_installation(plan_id: uuid.UUID, integration_id: uuid.UUID,
                                    principal: CurrentPrincipal, session: Session, now: Now):
    principal.require_plan_admin(plan_id, write=True)
    principal.require_own_credentials("keeping an integration the platform judged "
                                      "third-party")
    return await lifecycle.confirm_keep(session, plan_id, integration_id,
                                        user_id=principal.user_id, actor=principal.actor,
                                        now=now)


@router.post("/v1/plans/{plan_id}/integrations/{integration_id}/reports", status_code=201,
             response_model=ReportOut)
async def report_misjudgement(plan_id: uuid.UUID, integration_id: uuid.UUID, body: ReportIn,
                              principal: CurrentPrincipal, session: Session, now: Now):
    principal.require_plan_admin(plan_id, write=True)
    return await lifecycle.report_misjudgement(session, plan_id, integration_id, body.message,
                                               actor=principal.actor, now=now)


@router.post("/v1/plans/{plan_id}/integrations/{integration_id}/exception-requests",
             status_code=201, response_model=ExceptionRequestOut)
async def request_exception(plan_id: uuid.UUID, integration_id: uuid.UUID,
                            body: ExceptionRequestIn, principal: CurrentPrincipal,
                            session: Session, now: Now):
    """Ask the platform for an exception for a limited-data integration not approved yet; the
    operator grants it (`PUT /v1/integrations/{id}/exception`) or refuses it. One open request
    per plan and integration."""
    principal.require_plan_admin(plan_id, write=True)
    principal.require_own_credentials("asking for an exception")
    return await lifecycle.request_exception(session, plan_id, integration_id, body.message,
                                             actor=principal.actor, now=now)


@router.get("/v1/exception-requests", response_model=list[ExceptionRequestOut])
async def list_exception_requests(principal: CurrentPrincipal, session: Session):
    """The plans' exception requests the platform has not answered, oldest first."""
    principal.require_operator()
    return await lifecycle.open_requests(session)


@router.post("/v1/integrations/{integration_id}/exception-refusals", status_code=204)
async def refuse_exception(integration_id: uuid.UUID, body: ExceptionRefusalIn,
                           principal: CurrentPrincipal, session: Session, now: Now,
                           settings: AppSettings) -> Response:
    """Refuse a plan's open exception request; its admins are told (reminders)."""
    principal.require_operator()
    await lifecycle.refuse_exception(session, integration_id, body.plan_id, body.note,
                                     actor=principal.actor, now=now, base_url=settings.issuer)
    return Response(status_code=204)


@router.put("/v1/integrations/{integration_id}/dpop", response_model=IntegrationOut)
async def set_dpop_bound(integration_id: uuid.UUID, body: DPoPBoundIn,
                         principal: CurrentPrincipal, session: Session, now: Now):
    """Require DPoP of an integration (RFC 9449 §5.2, `dpop_bound_access_tokens`), or stop
    requiring it. Operators only; a plan requires it of all its custom integrations at
    `/v1/plans/{plan_id}/dpop`."""
    principal.require_operator()
    integ = await lifecycle.set_dpop_bound(session, integration_id,
                                           body.dpop_bound_access_tokens,
                                           actor=principal.actor, now=now)
    return service.out(integ)
