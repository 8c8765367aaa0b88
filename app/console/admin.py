"""The Admin Center: the plan's token expiration period (Security & Control > API access
tokens), every token of the plan, the integrations and the directory, the audit log. System
admins of the viewer's plan only; each page reads and acts through the management API's
services."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import Request
from sqlalchemy import select
from starlette.responses import Response

from app.api.deps import Now, Session
from app.api.routing import api_router
from app.audit import service as audit
from app.console import web
from app.console.web import PREFIX
from app.errors import InvalidRequest, NotFound
from app.integrations import lifecycle
from app.integrations import service as integration_service
from app.integrations.models import Integration
from app.notifications import sweeps
from app.oauth2 import scopes as catalogue
from app.plans import service as plans
from app.plans.expiry import Period, Spell, Unit
from app.tokens import cache, repository
from app.tokens import service as tokens
from app.tokens.repository import StoredToken
from app.tokens.rules import TokenKind, check, first_after, settled_until_all
from app.tokens.schemas import TokenOut, TokenStatusOut
from app.users import service as users

router = api_router(tags=["console"], include_in_schema=False)

SECURITY = f"{PREFIX}/admin/security/api-tokens"
PAGE = 100
UNITS = tuple(Unit)  # the choices of a period's unit, in their order


def _period(fields: dict[str, str]) -> Period:
    """The period a form names, or `InvalidRequest` saying what is wrong with it."""
    try:
        value = int(fields.get("value", "").strip())
        unit = Unit(fields.get("unit", ""))
    except ValueError:
        raise InvalidRequest("enter a whole number and a unit", code="invalid_period") from None
    try:
        return Period(value, unit)
    except ValueError as exc:
        raise InvalidRequest(str(exc), code="invalid_period") from None


async def _security(request: Request, session: Session, seen: web.Viewer, now,  # noqa: ANN001
                    *, proposed: Period | None = None, error: str | None = None,
                    status: int = 200) -> Response:
    plan = await plans.policy(session, seen.plan.id, request.app.state.token_cache)
    preview = None
    if proposed is not None:
        counts, dying = await plans.preview(session, plan.id, proposed, now)
        mine = [d for d in dying if d.user_id == seen.user.id]
        preview = {"period": proposed, "counts": counts, "dying": dying, "mine": mine,
                   "mine_names": ", ".join(f"{d.name or d.kind} …{d.hint}" for d in mine),
                   "mine_now": [d for d in mine if d.dies_at <= now],
                   "truncated": counts.expire_immediately + counts.expire_within_7_days
                   > len(dying)}
    context = {
        "period": plans.period_of(plan), "updated_at": plan.policy_updated_at,
        "dpop_required": plan.dpop_required,
        "units": UNITS, "proposed": proposed, "preview": preview, "error": error,
        "done": request.query_params.get("done"), "notified": request.query_params.get("n")}
    if proposed is None and error is None and status == 200:
        # The page of the policy alone, kept while the policy kept beside the cache is.
        return web.render_kept(request, "admin_security.html", context, seen=seen, now=now,
                               drawn_from=(plan, UNITS))
    return web.render(request, "admin_security.html", context, seen=seen, status=status)


@router.get(SECURITY)
async def security(request: Request, session: Session, now: Now) -> Response:
    """The period in force and its form; with `value` and `unit` in the query, the preview of
    that period (a read: what would die now, within 7 days, later)."""
    seen = await web.admin(request, session)
    if "value" not in request.query_params:
        return await _security(request, session, seen, now)
    try:
        proposed = _period(dict(request.query_params))
    except InvalidRequest as exc:
        return await _security(request, session, seen, now, error=exc.message, status=422)
    return await _security(request, session, seen, now, proposed=proposed)


@router.post(f"{SECURITY}/activate")
async def activate(request: Request, session: Session, now: Now) -> Response:
    """Set the period, once the admin confirmed what the preview said would die (and, by name,
    their own tokens). The preview is computed again here: a confirmation given for fewer
    deaths than the change now brings is asked again."""
    seen = await web.admin(request, session)
    fields = await web.form(request)
    try:
        proposed = _period(fields)
    except InvalidRequest as exc:
        return await _security(request, session, seen, now, error=exc.message, status=422)
    counts, dying = await plans.preview(session, seen.plan.id, proposed, now)
    doomed = counts.expire_immediately + counts.expire_within_7_days
    mine = any(d.user_id == seen.user.id for d in dying)
    confirmed = fields.get("confirm") == "yes" and fields.get("seen") == str(doomed)
    if (doomed and not confirmed) or (mine and fields.get("confirm_own") != "yes"):
        return await _security(request, session, seen, now, proposed=proposed, status=409,
                               error="Confirm the tokens this change expires before activating "
                                     "it.")
    await plans.set_period(session, seen.plan.id, proposed, seen.principal, now)
    return web.redirect(SECURITY, done="activated")


@router.post(f"{SECURITY}/turn-off")
async def turn_off(request: Request, session: Session, now: Now) -> Response:
    """No period: tokens live until revoked (those already expired stay dead: rule 4)."""
    seen = await web.admin(request, session)
    await web.form(request)
    await plans.remove_period(session, seen.plan.id, seen.principal, now)
    return web.redirect(SECURITY, done="turned_off")


@router.post(f"{SECURITY}/dpop")
async def dpop_policy(request: Request, session: Session, now: Now) -> Response:
    """Require proof-of-possession (DPoP, RFC 9449) for the plan's custom integrations."""
    seen = await web.admin(request, session)
    fields = await web.form(request)
    await plans.set_dpop_required(session, seen.plan.id, fields.get("required") == "yes",
                                  seen.principal, now)
    return web.redirect(SECURITY, done="dpop")


@router.post(f"{SECURITY}/notify")
async def notify(request: Request, session: Session, now: Now) -> Response:
    """Tell the owners of the plan's tokens that expire within the notice window now, through
    the outbox: the same notices the worker's sweep writes, and as it does, once per token and
    period (a second click, or the sweep after it, writes none again)."""
    seen = await web.admin(request, session)
    await web.form(request)
    settings = request.app.state.settings
    await session.close()  # the sweep writes in transactions of its own
    stats = await sweeps.enqueue_expiring(request.app.state.sessionmaker, sweeps.Sweep(
        now=now, batch_size=settings.worker_batch_size, base_url=settings.issuer,
        lead=timedelta(days=settings.notice_lead_days), plan_id=seen.plan.id))
    await audit.record(session, seen.principal.actor, "plan.owners_notified", seen.plan.id,
                       "plan", seen.plan.id, now, notices=stats["notices_expiring"])
    return web.redirect(SECURITY, done="notified", n=str(stats["notices_expiring"]))


# Admin Center > Tokens ----------------------------------------------------------------------

STATUSES = web.STATUSES
KINDS = tuple(k.value for k in TokenKind)


@router.get(f"{PREFIX}/admin/tokens")
async def plan_tokens(request: Request, session: Session, now: Now) -> Response:
    """Every token of the plan, newest first, a page of `PAGE` rows at a time; filtered by kind
    and user in the read, by status and "expiring within N days" on the page's rows."""
    seen = await web.admin(request, session)
    q = request.query_params
    kind = q.get("kind") or None
    if kind not in KINDS:
        kind = None
    user = web.parse_id(q.get("user", "")) if q.get("user") else None
    status = q.get("status") if q.get("status") in STATUSES else None
    within = web.whole_number(request, "within", 3650)
    offset = web.whole_number(request, "offset", web.OFFSET_MAX)
    people = await users.in_plan(session, seen.plan.id, request.app.state.token_cache)
    speech = web.speech_of(request, seen)

    async def read() -> tuple[tuple[web.Fragment | None, bool], datetime | None]:
        # The people the rows name are read from the database once the read began
        # (`read_listing`): a user added since keeps the rows from being kept, and one edited
        # by hand shows within `cache.LISTING_SECONDS`.
        named = {u.id: u for u in await users.list_in_plan(session, seen.plan.id)}
        items = await repository.list_where(
            session, plan_id=seen.plan.id, kind=kind, user_id=user,
            revoked=None if status is None else status == "revoked", limit=PAGE, offset=offset)
        history = await plans.history(session, seen.plan.id,
                                      kept=request.app.state.token_cache)
        rows, until = _shown(items, now, history, status,
                             timedelta(days=within) if within else None)
        html = web.fragment("admin_tokens_rows.html", {
            "rows": rows, "people": named, "kinds": KINDS}, speech) if rows else None
        return (html, len(items) == PAGE), until

    # Kept while nothing changes, as the API's listings are (users are only ever added, and an
    # addition drops every listing).
    key = ("page-tokens", seen.plan.id, kind, user, status, within, offset, speech.language,
           speech.zone_name)
    rows_html, full = await cache.read_listing(request.app.state.token_cache, key,
                                               seen.plan.id, now, read)
    return web.render_kept(request, "admin_tokens.html", {
        "rows_html": rows_html, "people": people, "kinds": KINDS,
        "statuses": STATUSES, "kind": kind, "user": user, "status": status, "within": within,
        "offset": offset, "more": full and offset + PAGE <= web.OFFSET_MAX,
        "page": PAGE,
        "done": q.get("done")}, seen=seen, now=now)


def _shown(items: list[StoredToken], now: datetime, history: list[Spell],
           status: str | None, window: timedelta | None,
           ) -> tuple[list[tuple[TokenOut, str | None]], datetime | None]:
    """The rows the page shows of `items`, each with why it is not active, filtered by status
    and by "expiring within `window`"; and the first instant they may be shown otherwise: a
    row's answer changes (`rules.settled_until_all`), or an active token comes into the
    window."""
    rows, changes = [], [settled_until_all((t.facts for t in items), now)]
    for stored in items:
        out = TokenOut.of(stored, now, history, verdict=check(stored.facts, now))
        if window is not None and out.status == "active" and out.expires_at is not None:
            changes.append(out.expires_at - window)  # when it comes into the window
        if status is not None and out.status != status:
            continue
        if window is not None and (out.status != "active" or out.expires_at is None
                                   or out.expires_at > now + window):
            continue
        why = None if out.status == "active" else \
            TokenStatusOut.of(stored, now, history).explanation
        rows.append((out, why))
    return rows, first_after(changes, now)


@router.post(PREFIX + "/admin/tokens/{token_id}/revoke")
async def revoke_token(token_id: str, request: Request, session: Session, now: Now) -> Response:
    seen = await web.admin(request, session)
    fields = await web.form(request)
    ident = web.parse_id(token_id)
    if ident is None:
        raise NotFound("no such token")
    stored = await tokens.get_in_plan(session, seen.plan.id, ident)
    await tokens.revoke(session, stored, actor=seen.principal.actor,
                        reason="revoked by a plan admin", now=now)
    return web.redirect(web.safe_back(fields.get("next") or f"{PREFIX}/admin/tokens"))


# Admin Center > Integrations, and the directory ---------------------------------------------

ACTIONS = ("deactivate", "reactivate", "confirm_keep", "report_misjudgement",
           "request_exception")


@router.get(f"{PREFIX}/admin/integrations")
async def integrations(request: Request, session: Session, now: Now) -> Response:
    seen = await web.admin(request, session)
    found = await lifecycle.listed(session, seen.plan.id, request.app.state.token_cache)
    return web.render_kept(request, "admin_integrations.html", {
        "items": lifecycle.views_of(found, now), "describe": catalogue.CATALOGUE,
        "done": request.query_params.get("done")}, seen=seen, now=now,
        drawn_from=(found, catalogue.CATALOGUE),
        until=lifecycle.views_settled_until(found, now))


@router.post(PREFIX + "/admin/integrations/{integration_id}/{action}")
async def integration_action(integration_id: str, action: str, request: Request,
                             session: Session, now: Now) -> Response:
    seen = await web.admin(request, session)
    fields = await web.form(request)
    ident = web.parse_id(integration_id)
    if ident is None or action not in ACTIONS:
        raise NotFound("no such integration in this plan")
    plan_id, actor = seen.plan.id, seen.principal.actor
    if action == "deactivate":
        await lifecycle.deactivate(session, plan_id, ident, actor=actor, now=now,
                                   reason=(fields.get("reason") or "").strip()[:500]
                                   or "deactivated by a plan admin")
    elif action == "reactivate":
        await lifecycle.reactivate(session, plan_id, ident, actor=actor, now=now)
    elif action == "confirm_keep":
        await lifecycle.confirm_keep(session, plan_id, ident, user_id=seen.user.id,
                                     actor=actor, now=now)
    elif action == "request_exception":
        message = (fields.get("message") or "").strip()
        if not message:
            raise InvalidRequest("say why it must keep working")
        await lifecycle.request_exception(session, plan_id, ident, message[:2000], actor=actor,
                                          now=now)
    else:
        message = (fields.get("message") or "").strip()
        if not message:
            raise InvalidRequest("say why the platform misjudged it")
        await lifecycle.report_misjudgement(session, plan_id, ident, message[:2000],
                                            actor=actor, now=now)
    return web.redirect(f"{PREFIX}/admin/integrations", done=action)


@router.get(f"{PREFIX}/admin/directory")
async def directory(request: Request, session: Session) -> Response:
    """The approved third-party integrations, searchable by name."""
    seen = await web.admin(request, session)
    query = (request.query_params.get("q") or "").strip()[:100]
    statement = select(Integration).where(Integration.kind == "third_party",
                                          Integration.review_status == "approved")
    if query:
        escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        statement = statement.where(Integration.name.ilike(f"%{escaped}%", escape="\\"))
    found = list((await session.execute(statement.order_by(Integration.name).limit(200)))
                 .scalars())
    return web.render(request, "admin_directory.html", {
        "items": found, "q": query, "describe": catalogue.CATALOGUE}, seen=seen)


async def _approved(session: Session, raw: str) -> Integration:
    """An approved third-party integration of the directory; anything else is not there."""
    ident = web.parse_id(raw)
    integ = await session.get(Integration, ident) if ident is not None else None
    if integ is None or integ.kind != "third_party" or integ.review_status != "approved":
        raise NotFound("no such integration in the directory")
    return integ


@router.get(PREFIX + "/admin/directory/{integration_id}/install")
async def install_page(integration_id: str, request: Request, session: Session) -> Response:
    """The consent screen of an installation: what the integration will be able to do in every
    member's name, and with which data, before the admin allows it."""
    seen = await web.admin(request, session)
    integ = await _approved(session, integration_id)
    installed = await integration_service.installation(session, integ.id, seen.plan.id)
    return web.render(request, "admin_install.html", {
        "integration": integ, "installed": installed is not None,
        "describe": catalogue.CATALOGUE}, seen=seen)


@router.post(PREFIX + "/admin/directory/{integration_id}/install")
async def install(integration_id: str, request: Request, session: Session, now: Now) -> Response:
    """Allowing installs it for the plan with exactly the permissions the screen listed."""
    seen = await web.admin(request, session)
    fields = await web.form(request)
    integ = await _approved(session, integration_id)
    if fields.get("decision") != "allow":
        return web.redirect(f"{PREFIX}/admin/directory")
    if await integration_service.installation(session, integ.id, seen.plan.id) is None:
        await integration_service.install(session, integ, seen.plan.id, seen.user.id,
                                          catalogue.join(integ.scopes or []).split(), now)
    return web.redirect(f"{PREFIX}/admin/integrations", done="installed")


# Admin Center > Audit log -------------------------------------------------------------------


@router.get(f"{PREFIX}/admin/audit")
async def audit_log(request: Request, session: Session) -> Response:
    seen = await web.admin(request, session)
    action = (request.query_params.get("action") or "").strip()[:100]
    cursor = request.query_params.get("cursor") or None
    if cursor is not None and len(cursor) > 200:
        raise InvalidRequest("the cursor is not one this page gave out")
    events, next_cursor = await audit.page(session, seen.plan.id, 50, cursor, action or None)
    return web.render(request, "admin_audit.html", {
        "events": events, "next_cursor": next_cursor, "action": action}, seen=seen)
