"""`/healthz`, `/readyz` and `/metrics`: what an orchestrator and Prometheus ask."""

from __future__ import annotations

import asyncio
import hmac
from datetime import UTC, datetime

from fastapi import Request
from sqlalchemy import func, select
from starlette.responses import Response

from app import db
from app.api.openapi import Health, Readiness
from app.api.responses import JSON, NO_STORE
from app.api.routing import api_router
from app.errors import NotFound, Unauthorized
from app.notifications.models import OutboxMessage
from app.ops import health, metrics

router = api_router(tags=["operations"])


@router.get("/healthz", summary="The process answers (liveness)", response_model=Health)
async def healthz() -> JSON:
    return JSON({"status": "ok"}, headers=NO_STORE)


@router.get("/readyz",
            summary="The process can serve: database, schema and cache listener (readiness)",
            response_model=Readiness,
            responses={503: {"description": "not ready; `checks` says what is wrong",
                             "model": Readiness}})
async def readyz(request: Request) -> JSON:
    state = request.app.state
    listener = getattr(state, "listener", None)
    ready = await health.readiness(
        state.engine, listener_expected=listener is not None,
        listener_connected=listener is not None and listener.connected.is_set())
    body = {"status": "ready" if ready.ready else "unready", "checks": ready.checks}
    return JSON(body, status_code=200 if ready.ready else 503,
                headers={**NO_STORE, **({} if ready.ready else {"Retry-After": "1"})})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
                       401: {"description": "TESSERA_METRICS_TOKEN is set and was not sent"},
                       404: {"description": "metrics are off"}})
async def metrics_endpoint(request: Request) -> Response:
    state = request.app.state
    settings = state.settings
    if not settings.metrics_enabled:
        raise NotFound("metrics are off (TESSERA_METRICS_ENABLED)")
    if settings.metrics_token is not None:
        presented = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        expected = settings.metrics_token.get_secret_value()
        if not hmac.compare_digest(presented.encode(), expected.encode()):
            raise Unauthorized("metrics need TESSERA_METRICS_TOKEN as a bearer token")
    try:
        await asyncio.wait_for(state.state_collector.refresh(lambda: _outbox(state)), 1.0)
    except Exception:  # noqa: BLE001, S110 - the rest of the metrics are still worth having
        pass
    return Response(metrics.exposition(state.metrics), headers=NO_STORE,
                    media_type="text/plain; version=0.0.4; charset=utf-8")


async def _outbox(state) -> tuple[int, float]:  # noqa: ANN001
    async with db.connection(state.engine) as conn:
        pending, oldest = (await conn.execute(
            select(func.count(), func.min(OutboxMessage.created_at))
            .where(OutboxMessage.status == "pending"))).one()
    age = 0.0
    if oldest is not None:
        oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
        age = max(0.0, (datetime.now(UTC) - oldest).total_seconds())
    return pending, age
