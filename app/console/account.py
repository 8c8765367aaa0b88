"""Signing in and out of the console, the language switch, and the viewer's personal settings:
API access (personal tokens) and connected apps (the OAuth grants they authorized)."""

from __future__ import annotations

from datetime import datetime

from fastapi import Request
from pydantic import ValidationError
from starlette.responses import Response

from app.api.deps import Now, Session
from app.api.routing import api_router
from app.audit import service as audit
from app.console import i18n, web
from app.console.web import PREFIX
from app.db import release, session_scope
from app.errors import Busy, Conflict, InvalidRequest, NotFound, TooManyAtOnce, TooManyAttempts
from app.oauth2 import browser
from app.oauth2 import connections as grants
from app.oauth2 import scopes as catalogue
from app.tokens import cache, repository, service
from app.tokens.rules import TokenKind, settled_until_all
from app.tokens.schemas import PersonalTokenIn, TokenOut
from app.users import service as users
from app.users.models import User

router = api_router(tags=["console"], include_in_schema=False)

# The page shows a person's tokens newest first, this many at a time (a script that mints a
# token per run leaves thousands: the page stays one screen, the rest a link away).
PAGE = 25


@router.get(PREFIX)
async def console_home() -> Response:
    return web.redirect(web.HOME)


@router.get(f"{PREFIX}/login")
async def login_page(request: Request, session: Session) -> Response:
    back = web.safe_back(request.query_params.get("next"))
    if browser.login_session(request, request.app.state.settings) is not None:
        return web.redirect(back)
    return web.render(request, "login.html", {"back": back, "email": "", "error": None})


@router.post(f"{PREFIX}/login")
async def login(request: Request, session: Session, now: Now) -> Response:
    fields = await web.form(request, max_fields=10)
    settings = request.app.state.settings
    back = web.safe_back(fields.get("next"))
    email = fields.get("email", "")[:320]
    speech = i18n.speech(request)
    try:
        user = await users.sign_in(
            session, email, fields.get("password", ""), via="console", now=now,
            throttles=request.app.state.throttles,
            source=request.client.host if request.client else None)
    except TooManyAttempts as exc:
        if isinstance(exc, TooManyAtOnce):
            return web.render(request, "login.html", {
                "back": back, "email": email,
                "error": speech.gettext("Too many sign-ins at once. Try again in a moment.")},
                status=exc.status_code, headers=exc.headers)
        return web.render(request, "login.html", {
            "back": back, "email": email,
            "error": speech.gettext("Too many failed sign-ins. Try again in %(seconds)s "
                                    "seconds.") % {"seconds": exc.retry_after}},
            status=exc.status_code, headers=exc.headers)
    except Busy as exc:
        return web.render(request, "login.html", {
            "back": back, "email": email,
            "error": speech.gettext("Too many sign-ins at once. Try again in a moment.")},
            status=exc.status_code, headers=exc.headers)
    if user is None:
        return web.render(request, "login.html", {
            "back": back, "email": email, "error": speech.gettext("Wrong email or password.")},
            status=401)
    response = web.redirect(back)
    browser.start_session(response, settings, user.id)
    await audit.record(session, f"user:{user.id}", "user.signed_in", user.plan_id, "user",
                       user.id, now, via="console")
    return response


@router.post(f"{PREFIX}/logout")
async def logout(request: Request) -> Response:
    await web.form(request)
    response = web.redirect(f"{PREFIX}/login")
    browser.end_session(response, request.app.state.settings)
    return response


@router.post(f"{PREFIX}/language")
async def language(request: Request, session: Session) -> Response:
    """The viewer's language, kept by this browser for a year (and by the user's account, for
    their mails)."""
    from app.console import operator

    raw = await request.form(max_files=0, max_fields=10)
    fields = {k: v for k, v in raw.items() if isinstance(v, str)}
    settings = request.app.state.settings
    if not browser.posted_from_here(request, settings) or not (
            browser.csrf_ok(request, settings, fields.get("csrf_token"))
            or operator.form_ok(request, fields)):
        raise web.FormRefused
    chosen = fields.get("language")
    response = web.redirect(web.safe_back(fields.get("next")))
    if chosen in i18n.LANGUAGES:
        response.set_cookie(i18n.LANG_COOKIE, chosen, max_age=365 * 86400, httponly=True,
                            samesite="lax", secure=settings.cookies_secure, path="/")
        login = browser.login_session(request, settings)
        user = await session.get(User, login.user_id) if login is not None else None
        if user is not None:
            user.locale = chosen
            await cache.changed(session, user_id=user.id)  # its viewer, on every replica
    return response


# Personal settings > API access -------------------------------------------------------------


async def _my_tokens(session: Session, seen: web.Viewer, now: datetime, offset: int = 0,
                     ) -> tuple[list[TokenOut], bool, datetime | None]:
    """A page of the viewer's personal tokens, whether older ones follow, and the first instant
    one of them is judged otherwise (`rules.settled_until`)."""
    items = await repository.list_where(session, user_id=seen.user.id,
                                        kind=TokenKind.personal.value, limit=PAGE + 1,
                                        offset=offset)
    shown = items[:PAGE]
    return [TokenOut.of(t, now) for t in shown], len(items) > PAGE, \
        settled_until_all((t.facts for t in shown), now)


def _rows(tokens: list[TokenOut], speech: i18n.Speech) -> web.Fragment | None:
    """The table's rows, drawn apart from the page (`web.fragment`), or None: no row."""
    return web.fragment("api_access_rows.html", {"tokens": tokens}, speech) if tokens else None


@router.get(f"{PREFIX}/me/api-access")
async def api_access(request: Request, session: Session, now: Now) -> Response:
    seen = await web.viewer(request, session)
    offset = web.whole_number(request, "offset", web.OFFSET_MAX)
    speech = web.speech_of(request, seen)

    async def read() -> tuple[tuple[web.Fragment | None, bool], datetime | None]:
        tokens, more, until = await _my_tokens(session, seen, now, offset)
        return (_rows(tokens, speech), more), until

    # Kept while nothing changes, as the API's listing of the same tokens is: the rows drawn
    # for the viewer's language and zone (the page's forms, with the session's CSRF token, are
    # drawn for each request).
    rows_html, more = await cache.read_listing(
        request.app.state.token_cache,
        ("page-api-access", seen.user.id, offset, speech.language, speech.zone_name),
        seen.user.plan_id, now, read)
    return web.render(request, "api_access.html", {
        "rows_html": rows_html, "issued": None, "offset": offset,
        "more": more and offset + PAGE <= web.OFFSET_MAX, "page": PAGE,
        "done": request.query_params.get("done")}, seen=seen)


async def _issue(request: Request, session: Session, seen: web.Viewer, now, name: str | None,
                 *, replaced: TokenOut | None = None) -> Response:  # noqa: ANN001
    stored, secret = await service.create_personal(
        session, request.app.state.token_batches, plan_id=seen.user.plan_id,
        user_id=seen.user.id, name=name, now=now, via="console")
    # Shown once, on this answer only: no redirect, whose URL or history could keep it.
    tokens, more, _ = await _my_tokens(session, seen, now)
    shown = [TokenOut.of(stored, now)] + [t for t in tokens if t.id != stored.id]
    return web.render(request, "api_access.html", {
        "rows_html": _rows(shown, web.speech_of(request, seen)),
        "issued": {"secret": secret, "name": stored.name, "replaced": replaced},
        "offset": 0, "more": more, "page": PAGE, "done": None}, seen=seen, status=201)


def _name(raw: str | None) -> str | None:
    """A token's name as the API takes it (`PersonalTokenIn`: no control characters)."""
    name = (raw or "").strip()[:200] or None
    try:
        return PersonalTokenIn(name=name).name
    except ValidationError:
        raise InvalidRequest("a token's name has no control characters") from None


@router.post(f"{PREFIX}/me/api-access/generate")
async def generate(request: Request, session: Session, now: Now) -> Response:
    seen = await web.viewer(request, session)
    fields = await web.form(request)
    return await _issue(request, session, seen, now, _name(fields.get("name")))


async def _own_token(session: Session, seen: web.Viewer, raw: str):  # noqa: ANN202
    token_id = web.parse_id(raw)
    if token_id is None:
        raise NotFound("no such token")
    stored = await service.get_in_plan(session, seen.user.plan_id, token_id,
                                       user_id=seen.user.id)
    if stored.kind != TokenKind.personal:
        raise NotFound("no such token")
    return stored


@router.post(PREFIX + "/me/api-access/{token_id}/revoke")
async def revoke(token_id: str, request: Request, session: Session, now: Now) -> Response:
    seen = await web.viewer(request, session)
    await web.form(request)
    stored = await _own_token(session, seen, token_id)
    await service.revoke(session, stored, actor=seen.principal.actor,
                         reason="revoked by its owner", now=now)
    return web.redirect(f"{PREFIX}/me/api-access", done="revoked")


@router.post(PREFIX + "/me/api-access/{token_id}/regenerate")
async def regenerate(token_id: str, request: Request, session: Session, now: Now) -> Response:
    """A new token with the old one's name; the old one revoked in the same transaction."""
    seen = await web.viewer(request, session)
    await web.form(request)
    stored = await _own_token(session, seen, token_id)
    old = TokenOut.of(stored, now)
    # The old one revoked first, and only once, in a unit of work of its own (committed before
    # the new token's group write): of concurrent regenerations of one token only the one that
    # revoked it issues a successor (the others find it revoked).
    await release(session)
    async with session_scope(request.app.state.sessionmaker) as own:
        revoked = await service.revoke(own, stored, actor=seen.principal.actor,
                                       reason="regenerated by its owner", now=now)
    if not revoked:
        raise Conflict("this token was revoked already; generate a new one",
                       code="token_revoked")
    return await _issue(request, session, seen, now, stored.name, replaced=old)


# Personal settings > Connected apps ---------------------------------------------------------


@router.get(f"{PREFIX}/me/connected-apps")
async def connected_apps(request: Request, session: Session, now: Now) -> Response:
    seen = await web.viewer(request, session)
    found = await grants.of_user(session, seen.user.id, now)
    return web.render(request, "connected_apps.html", {
        "grants": found, "describe": catalogue.CATALOGUE,
        "done": request.query_params.get("done")}, seen=seen)


@router.post(PREFIX + "/me/connected-apps/{integration_id}/revoke")
async def disconnect(integration_id: str, request: Request, session: Session,
                     now: Now) -> Response:
    seen = await web.viewer(request, session)
    await web.form(request)
    ident = web.parse_id(integration_id)
    if ident is None or not await grants.revoke(session, seen.principal, ident, now):
        raise NotFound("no such connected app")
    return web.redirect(f"{PREFIX}/me/connected-apps", done="disconnected")
