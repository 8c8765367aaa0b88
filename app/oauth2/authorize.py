"""`/oauth2/authorize` (RFC 6749 §4.1.1-§4.1.2, RFC 7636, RFC 9207): login, consent, code.

Errors that make the redirect URI untrustworthy (unknown client, unregistered redirect URI) are
shown on the page; every other error is sent back to the client with `error` and `state`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import RedirectResponse, Response

from app import credentials
from app.api.deps import AppSettings, Now, Session
from app.audit import service as audit
from app.config import Settings
from app.credentials import SecretKind
from app.integrations import service as integrations
from app.integrations.models import Installation, Integration
from app.oauth2 import browser, grants
from app.oauth2 import scopes as catalogue
from app.oauth2.models import AuthorizationCode
from app.plans.models import Plan
from app.tokens import cache
from app.users import service as users
from app.users.models import User

router = APIRouter(tags=["oauth2"], include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")  # BASE64URL(SHA-256), RFC 7636 §4.2
_PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge",
           "code_challenge_method")


class PageError(Exception):
    """The redirect URI cannot be trusted: tell the person, not the client."""


class RedirectError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error, self.description = error, description


@dataclass
class AuthRequest:
    integration: Integration
    redirect_uri: str
    scopes: list[str]
    state: str | None
    challenge: str
    params: dict[str, str]  # carried through the login and consent forms


async def _validate(session: AsyncSession, params: dict[str, str]) -> AuthRequest:
    client_id = params.get("client_id")
    integ = await integrations.by_client_id(session, client_id) if client_id else None
    if integ is None:
        raise PageError("The application is unknown (missing or wrong client_id).")
    redirect_uri = params.get("redirect_uri")
    if redirect_uri is None and len(integ.redirect_uris) == 1:
        redirect_uri = integ.redirect_uris[0]
    if redirect_uri is None or redirect_uri not in integ.redirect_uris:
        # RFC 9700 §4.1.3: exact string matching, nothing else.
        raise PageError("The redirect URI is missing or not registered for this application.")
    req = AuthRequest(integ, redirect_uri, [], params.get("state"), "", {
        k: params[k] for k in _PARAMS if params.get(k) is not None})
    if params.get("response_type") != "code":
        raise _redirect_error(req, "unsupported_response_type",
                              "only response_type=code is supported")
    challenge = params.get("code_challenge")
    if not challenge:
        raise _redirect_error(req, "invalid_request", "PKCE is required: send code_challenge")
    if params.get("code_challenge_method") != "S256":
        raise _redirect_error(req, "invalid_request",
                              "code_challenge_method must be S256 (plain is not accepted)")
    if not _CHALLENGE.match(challenge):
        raise _redirect_error(req, "invalid_request", "code_challenge is malformed")
    requested = catalogue.parse(params.get("scope")) or list(integ.scopes)
    if not requested or any(s not in integ.scopes for s in requested):
        raise _redirect_error(req, "invalid_scope",
                              "the requested scope exceeds the application's permissions")
    req.scopes, req.challenge = requested, challenge
    return req


def _redirect_error(req: AuthRequest, error: str, description: str) -> Exception:
    exc = RedirectError(error, description)
    exc.request = req  # type: ignore[attr-defined]
    return exc


def _to_client(req: AuthRequest, settings: Settings, **params: str) -> RedirectResponse:
    query = {**params, "iss": settings.issuer.rstrip("/")}
    if req.state is not None:
        query["state"] = req.state
    sep = "&" if "?" in req.redirect_uri else "?"
    # 303: the browser must not re-send the form to the client (RFC 9700 §4.12).
    return RedirectResponse(req.redirect_uri + sep + urlencode(query), status_code=303,
                            headers=browser.PAGE_HEADERS)


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    csrf = browser.csrf_token(request)
    response = templates.TemplateResponse(request, name, {**context, "csrf": csrf},
                                          status_code=status, headers=browser.PAGE_HEADERS)
    browser.set_csrf(response, request.app.state.settings, csrf)
    return response


def _error_page(request: Request, message: str) -> Response:
    return _page(request, "error.html", {"message": message}, status=400)


@dataclass
class Standing:
    """What this user may do with this integration in their plan."""

    blocked: str | None = None  # shown on the consent page; only Deny is offered
    denied: str | None = None  # sent back to the client as access_denied at once
    install: bool = False  # allowing installs a third-party integration for the plan


async def _standing(session: AsyncSession, req: AuthRequest, user: User, now) -> Standing:  # noqa: ANN001
    integ = req.integration
    if integ.kind == "custom" and integ.plan_id != user.plan_id:
        return Standing(denied="this application is not available in your plan")
    if user.role != "admin" and catalogue.ADMIN_SCOPES & set(req.scopes):
        return Standing(denied="only a plan admin can grant admin permissions")
    inst = await integrations.installation(session, integ.id, user.plan_id)
    if inst is None and integ.kind == "third_party":
        if integ.review_status == "revoked":
            return Standing(denied="review_revoked: the integration's platform review was "
                                   "revoked")
        if user.role != "admin":
            return Standing(blocked=f"{integ.name} is not installed in your plan. Ask a plan "
                                    "admin to install it first.")
        return Standing(install=True)
    access, _period = await grants.access_in_plan(session, integ, user.plan_id, now)
    if not access.allowed:
        return Standing(denied=f"{access.rule}: {access.describe()}")
    return Standing()


async def _user(session: AsyncSession, request: Request, settings: Settings) -> User | None:
    user_id = browser.session_user(request, settings)
    return await session.get(User, user_id) if user_id else None


async def _consent_page(request: Request, session: AsyncSession, req: AuthRequest, user: User,
                        standing: Standing) -> Response:
    plan = await session.get(Plan, user.plan_id)
    note = None
    if standing.install:
        note = (f"{req.integration.name} is not installed in your plan yet. Allowing installs "
                "it for the whole plan; members can then authorize it for themselves.")
    return _page(request, "consent.html", {
        "client_name": req.integration.name, "params": req.params,
        "permissions": [(s, catalogue.CATALOGUE[s]) for s in req.scopes],
        "install_note": note, "blocked": standing.blocked, "user_email": user.email,
        "plan_name": plan.name if plan else "",
    })


async def _handle(request: Request, session: AsyncSession, settings: Settings, now,  # noqa: ANN001
                  params: dict[str, str], form: dict[str, str] | None) -> Response:
    try:
        req = await _validate(session, params)
    except PageError as exc:
        return _error_page(request, str(exc))
    except RedirectError as exc:
        return _to_client(exc.request, settings, error=exc.error,  # type: ignore[attr-defined]
                          error_description=exc.description)

    if form is not None and not browser.csrf_ok(request, form.get("csrf_token")):
        return _error_page(request, "The form has expired or was not sent from this page. "
                                    "Go back to the application and start again.")
    action = (form or {}).get("action")

    if action == "login":
        user = await users.authenticate(session, form.get("email", ""), form.get("password", ""))
        if user is None:
            return _page(request, "login.html", {
                "client_name": req.integration.name, "params": req.params,
                "error": "Wrong email or password.", "email": form.get("email", "")},
                status=401)
        # Post/redirect/get: the consent page is fetched afresh, with the new session.
        response = RedirectResponse(f"/oauth2/authorize?{urlencode(req.params)}",
                                    status_code=303, headers=browser.PAGE_HEADERS)
        browser.start_session(response, settings, user.id)
        return response

    user = await _user(session, request, settings)
    if user is None:
        return _page(request, "login.html", {"client_name": req.integration.name,
                                             "params": req.params, "error": None, "email": ""})
    standing = await _standing(session, req, user, now)
    if standing.denied:
        return _to_client(req, settings, error="access_denied",
                          error_description=standing.denied)
    if action != "consent":
        return await _consent_page(request, session, req, user, standing)
    if form.get("decision") != "allow" or standing.blocked:
        return _to_client(req, settings, error="access_denied",
                          error_description="the user denied the request")
    if standing.install:
        session.add(Installation(id=uuid.uuid4(), integration_id=req.integration.id,
                                 plan_id=user.plan_id, state="active", installed_by=user.id,
                                 installed_at=now))
        await audit.record(session, f"user:{user.id}", "integration.installed", user.plan_id,
                           "integration", req.integration.id, now, name=req.integration.name)
        await cache.changed(session, plan_id=user.plan_id, integration_id=req.integration.id)
    code = credentials.generate(SecretKind.code)
    session.add(AuthorizationCode(
        id=uuid.uuid4(), digest=credentials.digest(code), integration_id=req.integration.id,
        plan_id=user.plan_id, user_id=user.id, redirect_uri=req.redirect_uri,
        scopes=catalogue.join(req.scopes), code_challenge=req.challenge,
        code_challenge_method="S256", issued_at=now,
        expires_at=now + timedelta(seconds=settings.authorization_code_ttl_seconds)))
    await audit.record(session, f"user:{user.id}", "integration.authorized", user.plan_id,
                       "integration", req.integration.id, now, scopes=catalogue.join(req.scopes))
    return _to_client(req, settings, code=code)


@router.get("/oauth2/authorize")
async def authorize_page(request: Request, session: Session, settings: AppSettings,
                         now: Now) -> Response:
    return await _handle(request, session, settings, now, dict(request.query_params), None)


@router.post("/oauth2/authorize")
async def authorize_form(request: Request, session: Session, settings: AppSettings,
                         now: Now) -> Response:
    raw = await request.form(max_files=0, max_fields=40)
    form = {k: v for k, v in raw.items() if isinstance(v, str)}
    return await _handle(request, session, settings, now, form, form)

