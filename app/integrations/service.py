"""Registering integrations (OAuth clients) and their installations in plans."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app import credentials
from app.audit import service as audit
from app.credentials import SecretKind
from app.db import write_lock
from app.errors import NotFound
from app.integrations.access import IntegrationFacts
from app.integrations.models import Installation, Integration
from app.integrations.schemas import IntegrationIn, IntegrationOut, OperatorIntegrationIn


def facts_of(integ: Integration) -> IntegrationFacts:
    """What the access decision (rule 6) needs to know of an integration."""
    return IntegrationFacts(
        kind=integ.kind, review_status=integ.review_status,
        review_deadline=integ.review_deadline, exception_until=integ.exception_until,
        data_access=integ.data_access, judged_third_party=integ.judged_third_party_at is not None,
    )


def new_client_id() -> str:
    return f"tc_{secrets.token_hex(12)}"


def out(integ: Integration) -> IntegrationOut:
    return IntegrationOut(
        id=integ.id, client_id=integ.client_id, name=integ.name, kind=integ.kind,
        plan_id=integ.plan_id, redirect_uris=integ.redirect_uris, scopes=integ.scopes,
        confidential=integ.confidential, can_introspect=integ.can_introspect,
        data_access=integ.data_access, review_status=integ.review_status,
        review_deadline=integ.review_deadline, exception_until=integ.exception_until,
        judged_third_party=integ.judged_third_party_at is not None, created_at=integ.created_at,
        dpop_bound_access_tokens=integ.dpop_bound_access_tokens,
    )


def _register(session: AsyncSession, body: IntegrationIn, *, kind: str,
              plan_id: uuid.UUID | None, actor: str, now: datetime,
              review_deadline: datetime | None) -> tuple[Integration, str | None]:
    secret = credentials.generate(SecretKind.client_secret) if body.confidential else None
    integ = Integration(
        id=uuid.uuid4(), client_id=new_client_id(),
        client_secret_digest=credentials.digest(secret) if secret else None,
        name=body.name, kind=kind, plan_id=plan_id, redirect_uris=body.redirect_uris,
        scopes=body.scopes, confidential=body.confidential,
        can_introspect=body.can_introspect and body.confidential, data_access=body.data_access,
        review_status="not_reviewed", review_deadline=review_deadline, review_steps={},
        created_at=now, created_by=actor,
        dpop_bound_access_tokens=body.dpop_bound_access_tokens,
    )
    session.add(integ)
    return integ, secret


async def create_custom(session: AsyncSession, plan_id: uuid.UUID, body: IntegrationIn, *,
                        actor: str, user_id: uuid.UUID | None,
                        now: datetime) -> tuple[Integration, str | None]:
    """A plan's own integration; installed in that plan from the start."""
    integ, secret = _register(session, body, kind="custom", plan_id=plan_id, actor=actor,
                              now=now, review_deadline=None)
    await session.flush()
    # The plan admin who creates it approves what it registers (rule 11).
    session.add(Installation(id=uuid.uuid4(), integration_id=integ.id, plan_id=plan_id,
                             state="active", approved_scopes=list(integ.scopes),
                             installed_by=user_id, installed_at=now))
    await session.flush()
    await audit.record(session, actor, "integration.created", plan_id, "integration", integ.id,
                       now, kind="custom", name=body.name)
    from app.tokens import cache

    await cache.changed(session, integration_id=integ.id)  # the plan's list shows it
    return integ, secret


async def create_by_operator(session: AsyncSession, body: OperatorIntegrationIn, *,
                             actor: str, now: datetime, review_deadline: datetime,
                             ) -> tuple[Integration, str | None]:
    """A third-party integration (its review deadline `review_deadline`), or a platform
    resource server, which is not reviewed."""
    integ, secret = _register(session, body, kind=body.kind, plan_id=None, actor=actor,
                              now=now, review_deadline=review_deadline
                              if body.kind == "third_party" else None)
    await session.flush()
    await audit.record(session, actor, "integration.registered", None, "integration", integ.id,
                       now, kind=body.kind, name=body.name)
    return integ, secret


async def by_client_id(session: AsyncSession, client_id: str) -> Integration | None:
    return (await session.execute(
        select(Integration).where(Integration.client_id == client_id))).scalar_one_or_none()


async def get(session: AsyncSession, integration_id: uuid.UUID) -> Integration:
    integ = await session.get(Integration, integration_id)
    if integ is None:
        raise NotFound("no such integration")
    return integ


async def installation(session: AsyncSession, integration_id: uuid.UUID,
                       plan_id: uuid.UUID, *, lock: bool = False) -> Installation | None:
    where = (Installation.integration_id == integration_id) & (Installation.plan_id == plan_id)
    query = select(Installation).where(where)
    if lock:
        await write_lock(session, Installation, where)
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def install(session: AsyncSession, integ: Integration, plan_id: uuid.UUID,
                  user_id: uuid.UUID, scopes: list[str], now: datetime) -> Installation:
    """A plan admin's consent installs a third-party integration for the plan with the scopes
    the consent screen showed, and no more (rule 11); an audit event, and every replica's cache
    told. A concurrent second install of the same one fails on the unique (integration, plan)."""
    from app.tokens import cache

    inst = Installation(id=uuid.uuid4(), integration_id=integ.id, plan_id=plan_id,
                        state="active", approved_scopes=list(scopes), installed_by=user_id,
                        installed_at=now)
    session.add(inst)
    await audit.record(session, f"user:{user_id}", "integration.installed", plan_id,
                       "integration", integ.id, now, name=integ.name,
                       approved_scopes=list(scopes))
    await cache.changed(session, plan_id=plan_id, integration_id=integ.id)
    return inst


async def widen(session: AsyncSession, integ: Integration, plan_id: uuid.UUID,
                user_id: uuid.UUID, scopes: list[str], now: datetime) -> Installation:
    """An admin's consent to scopes the installation had not approved yet adds them."""
    from app.oauth2 import scopes as catalogue
    from app.tokens import cache

    inst = await installation(session, integ.id, plan_id, lock=True)
    if inst is None:
        raise NotFound("no such integration in this plan")
    before = list(inst.approved_scopes or ())
    inst.approved_scopes = catalogue.join({*before, *scopes}).split()
    await audit.record(session, f"user:{user_id}", "installation.scopes_approved", plan_id,
                       "integration", integ.id, now, previous=before,
                       approved_scopes=inst.approved_scopes)
    await cache.changed(session, plan_id=plan_id, integration_id=integ.id)
    return inst
