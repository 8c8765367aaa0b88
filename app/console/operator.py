"""The operator console: the review queue (integrations by status and deadline; status, steps,
deadline and exception set there), and the plans' misjudgement reports and exception requests
to act on.

Operators hold no password: they sign in with their operator token, once, and get a session of
their own (a cookie scoped to these pages, signed like the users' one, with its own CSRF
token). The token is checked as the API checks it; it is never shown or kept in the page.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import case, select
from starlette.responses import Response

from app import credentials
from app.api.deps import Now, Session
from app.api.routing import api_router
from app.audit import service as audit
from app.audit.models import AuditEvent
from app.console import web
from app.console.web import PREFIX
from app.credentials import SecretKind
from app.errors import InvalidRequest, NotFound
from app.integrations import lifecycle, review
from app.integrations.models import Integration
from app.integrations.schemas import ReviewIn
from app.oauth2 import browser
from app.operators.models import Operator

router = api_router(tags=["console"], include_in_schema=False)

BASE = f"{PREFIX}/operator"
COOKIE = "tessera_operator"
MAX_AGE = 3600
STATUSES = ("not_reviewed", "in_review", "approved", "not_approved", "revoked")
QUEUE_SHOWN = 500


@dataclass(frozen=True, slots=True)
class OperatorSession:
    operator_id: uuid.UUID
    sid: str


def _serializer(request: Request) -> URLSafeTimedSerializer:
    keys = request.app.state.settings.secret_keys
    return URLSafeTimedSerializer(list(reversed(keys)), salt="tessera-operator")


def _session(request: Request) -> OperatorSession | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        data = _serializer(request).loads(raw, max_age=MAX_AGE)
        return OperatorSession(uuid.UUID(data["op"]), str(data["sid"]))
    except (BadSignature, KeyError, ValueError, TypeError):
        return None


def form_ok(request: Request, fields: dict[str, str]) -> bool:
    """A form posted with a signed-in operator's CSRF token (the language switch of their
    pages)."""
    seen = _session(request)
    return seen is not None and browser.bound_ok(request.app.state.settings, seen.sid,
                                                 fields.get("csrf_token"))


def _csrf(request: Request, seen: OperatorSession) -> str:
    return browser.bound_token(request.app.state.settings, seen.sid)


async def _operator(request: Request, session: Session) -> tuple[Operator, OperatorSession]:
    seen = _session(request)
    operator = await session.get(Operator, seen.operator_id) if seen else None
    if seen is None or operator is None:
        raise web.SignInRequired(request.url.path, to=f"{BASE}/login")
    return operator, seen


async def _form(request: Request, seen: OperatorSession) -> dict[str, str]:
    raw = await request.form(max_files=0, max_fields=40)
    fields = {k: v for k, v in raw.items() if isinstance(v, str)}
    settings = request.app.state.settings
    if not (browser.posted_from_here(request, settings)
            and browser.bound_ok(settings, seen.sid, fields.get("csrf_token"))):
        raise web.FormRefused
    return fields


async def _acting(request: Request, session: Session,
                  integration_id: str) -> tuple[Operator, dict[str, str], uuid.UUID]:
    """A signed-in operator's form about one integration: the operator, the form (its CSRF
    token checked) and the integration's id, or the refusals."""
    operator, seen = await _operator(request, session)
    fields = await _form(request, seen)
    ident = web.parse_id(integration_id)
    if ident is None:
        raise NotFound("no such integration")
    return operator, fields, ident


def _render(request: Request, name: str, context: dict, operator: Operator | None,
            seen: OperatorSession | None, status: int = 200) -> Response:
    return web.render(request, name, {**context, "operator": operator}, status=status,
                      csrf=_csrf(request, seen) if seen else None)


@router.get(f"{BASE}/login")
async def login_page(request: Request) -> Response:
    return web.render(request, "operator_login.html", {"error": None})


@router.post(f"{BASE}/login")
async def login(request: Request, session: Session, now: Now) -> Response:
    fields = await web.form(request, max_fields=5)
    settings = request.app.state.settings
    secret = fields.get("token", "").strip()
    operator = None
    if credentials.kind_of(secret) is SecretKind.operator:
        operator = (await session.execute(select(Operator).where(
            Operator.token_digest == credentials.digest(secret)))).scalar_one_or_none()
    if operator is None:
        return web.render(request, "operator_login.html", {
            "error": "That is not an operator token."}, status=401)
    response = web.redirect(BASE)
    value = _serializer(request).dumps({"op": str(operator.id),
                                        "sid": secrets.token_urlsafe(16)})
    response.set_cookie(COOKIE, value, max_age=MAX_AGE, httponly=True, samesite="lax",
                        secure=settings.cookies_secure, path=BASE)
    await audit.record(session, f"operator:{operator.id}", "operator.signed_in", None,
                       "operator", operator.id, now, via="console")
    return response


@router.post(f"{BASE}/logout")
async def logout(request: Request, session: Session) -> Response:
    _operator_row, seen = await _operator(request, session)
    await _form(request, seen)
    response = web.redirect(f"{BASE}/login")
    response.delete_cookie(COOKIE, path=BASE, httponly=True, samesite="lax",
                           secure=request.app.state.settings.cookies_secure)
    return response


@router.get(BASE)
async def queue(request: Request, session: Session, now: Now) -> Response:
    """Integrations under review: not approved first, the nearest deadline first."""
    operator, seen = await _operator(request, session)
    status = request.query_params.get("status")
    statement = select(Integration).where(Integration.kind != "platform")
    if status in STATUSES:
        statement = statement.where(Integration.review_status == status)
    statement = statement.order_by(
        case((Integration.review_status == "approved", 1), else_=0),
        Integration.review_deadline.is_(None), Integration.review_deadline,
        Integration.name).limit(QUEUE_SHOWN)
    found = list((await session.execute(statement)).scalars())
    rows = [{"integ": i, "steps": [s.value for s in review.required_steps(i.data_access)],
             "missing": review.missing_steps(i.data_access, i.review_steps or {}),
             "exception_allowed": review.exception_allowed(i.data_access)} for i in found]
    return _render(request, "operator_queue.html", {
        "rows": rows, "statuses": STATUSES, "status": status if status in STATUSES else None,
        "done": request.query_params.get("done"), "now": now}, operator, seen)


def _instant(raw: str | None) -> datetime | None:
    """A `datetime-local` or `date` field, read as UTC; empty: None."""
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest("enter a date as YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    if not 2000 <= at.year <= 2200:
        raise InvalidRequest("enter a date between the years 2000 and 2200")
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


@router.post(BASE + "/integrations/{integration_id}/review")
async def set_review(integration_id: str, request: Request, session: Session,
                     now: Now) -> Response:
    operator, fields, ident = await _acting(request, session, integration_id)
    status = fields.get("status") or None
    if status is not None and status not in STATUSES:
        raise InvalidRequest("no such review status")
    steps = {s.value: f"step_{s.value}" in fields for s in review.Step}
    body = ReviewIn(status=status, deadline=_instant(fields.get("deadline")), steps=steps,
                    note=(fields.get("note") or "").strip()[:500] or None)
    await lifecycle.set_review(session, ident, body, actor=f"operator:{operator.id}", now=now,
                               base_url=request.app.state.settings.issuer)
    return web.redirect(BASE, done="review")


@router.post(BASE + "/integrations/{integration_id}/exception")
async def set_exception(integration_id: str, request: Request, session: Session,
                        now: Now) -> Response:
    """Grant an exception until a date (empty: withdraw it)."""
    operator, fields, ident = await _acting(request, session, integration_id)
    await lifecycle.set_exception(session, ident, _instant(fields.get("until")),
                                  actor=f"operator:{operator.id}", now=now,
                                  base_url=request.app.state.settings.issuer)
    back = fields.get("next")
    return web.redirect(back if back in (BASE, f"{BASE}/requests") else BASE, done="exception")


@router.post(BASE + "/integrations/{integration_id}/dpop")
async def set_dpop(integration_id: str, request: Request, session: Session,
                   now: Now) -> Response:
    """Require DPoP of an integration's access tokens (RFC 9449 §5.2), or stop requiring it."""
    operator, fields, ident = await _acting(request, session, integration_id)
    await lifecycle.set_dpop_bound(session, ident, fields.get("bound") == "yes",
                                   actor=f"operator:{operator.id}", now=now)
    return web.redirect(BASE, done="dpop")


@router.get(f"{BASE}/requests")
async def requests(request: Request, session: Session) -> Response:
    """Exception requests to answer, and the latest misjudgement reports."""
    operator, seen = await _operator(request, session)
    open_ = await lifecycle.open_requests(session)
    reports = list((await session.execute(
        select(AuditEvent).where(AuditEvent.action == lifecycle.REPORT_ACTION)
        .order_by(AuditEvent.occurred_at.desc()).limit(100))).scalars())
    names = {str(i): name for i, name in (await session.execute(
        select(Integration.id, Integration.name).where(
            Integration.id.in_({uuid.UUID(r.target_id) for r in reports})))).all()} \
        if reports else {}
    return _render(request, "operator_requests.html", {
        "requests": open_, "reports": reports, "names": names,
        "done": request.query_params.get("done")}, operator, seen)


@router.post(BASE + "/integrations/{integration_id}/refuse")
async def refuse(integration_id: str, request: Request, session: Session, now: Now) -> Response:
    operator, seen = await _operator(request, session)
    fields = await _form(request, seen)
    ident = web.parse_id(integration_id)
    plan = web.parse_id(fields.get("plan_id", ""))
    if ident is None or plan is None:
        raise NotFound("no open exception request of this plan for this integration")
    await lifecycle.refuse_exception(session, ident, plan,
                                     (fields.get("note") or "").strip()[:500] or None,
                                     actor=f"operator:{operator.id}", now=now,
                                     base_url=request.app.state.settings.issuer)
    return web.redirect(f"{BASE}/requests", done="refused")
