"""`/oauth2/authorize` (RFC 6749 §4.1.1-§4.1.2, RFC 7636, RFC 9207): login, consent, code.

Errors that make the redirect URI untrustworthy (unknown client, unregistered redirect URI) are
shown on the page; every other error is sent back to the client with `error` and `state`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import RedirectResponse, Response

from app import credentials
from app.api.deps import AppSettings, Now, Session
from app.api.routing import api_router
from app.audit import service as audit
from app.config import Settings
from app.credentials import SecretKind
from app.errors import Busy, TooManyAtOnce, TooManyAttempts
from app.integrations import review
from app.integrations import service as integrations
from app.integrations.access import Access, ReviewStatus, Rule, decide
from app.integrations.models import Integration
from app.integrations.service import facts_of
from app.oauth2 import browser, callers
from app.oauth2 import scopes as catalogue
from app.oauth2.models import AuthorizationCode
from app.plans.models import Plan
from app.users import service as users
from app.users.models import User

router = api_router(tags=["oauth2"], include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")  # BASE64URL(SHA-256), RFC 7636 §4.2
_PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge",
           "code_challenge_method", "dpop_jkt")
_JKT = _CHALLENGE  # a SHA-256 thumbprint, base64url: 43 characters (RFC 9449 §10)


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
    redirect_uri_sent: bool = True  # the request named it (RFC 6749 §4.1.3)
    scope_sent: bool = True  # the request named a scope (absent: a default, RFC 6749 §3.3)


def single_valued(items: list[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """The parameters, and the names of those sent more than once (RFC 6749 §3.1: "Request and
    response parameters MUST NOT be included more than once")."""
    params: dict[str, str] = {}
    repeated: list[str] = []
    for key, value in items:
        if key in params and key not in repeated:
            repeated.append(key)
        params[key] = value
    return params, repeated


async def _validate(session: AsyncSession, params: dict[str, str],
                    repeated: list[str]) -> AuthRequest:
    if {"client_id", "redirect_uri"} & set(repeated):
        raise PageError("The request names its application or redirect URI more than once.")
    client_id = params.get("client_id")
    integ = await integrations.by_client_id(session, client_id) if client_id else None
    if integ is None:
        raise PageError("The application is unknown (missing or wrong client_id).")
    redirect_uri = params.get("redirect_uri")
    sent = redirect_uri is not None
    if redirect_uri is None and len(integ.redirect_uris) == 1:
        redirect_uri = integ.redirect_uris[0]
    if redirect_uri is None or redirect_uri not in integ.redirect_uris:
        # RFC 9700 §4.1.3: exact string matching, nothing else.
        raise PageError("The redirect URI is missing or not registered for this application.")
    req = AuthRequest(integ, redirect_uri, [], params.get("state"), "", {
        k: params[k] for k in _PARAMS if params.get(k) is not None}, redirect_uri_sent=sent)
    if repeated:
        # Only names of ours are echoed: the description must keep to RFC 6749 §4.1.2.1's
        # characters, and a name is the caller's.
        name = next((k for k in repeated if k in _PARAMS), None)
        raise _redirect_error(req, "invalid_request",
                              f"parameter '{name}' is repeated" if name else
                              "a parameter is repeated (RFC 6749, section 3.1)")
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
    jkt = params.get("dpop_jkt")
    if jkt is not None and not _JKT.match(jkt):
        raise _redirect_error(req, "invalid_request", "dpop_jkt is not a JWK SHA-256 "
                                                      "thumbprint (RFC 9449, section 10)")
    requested = catalogue.parse(params.get("scope"))
    req.scope_sent = bool(requested)
    requested = requested or list(integ.scopes)
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


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200,
          headers: dict[str, str] | None = None) -> Response:
    settings = request.app.state.settings
    csrf = browser.csrf_token(request, settings)
    response = templates.TemplateResponse(request, name, {**context, "csrf": csrf},
                                          status_code=status,
                                          headers={**browser.PAGE_HEADERS, **(headers or {})})
    if browser.login_session(request, settings) is None:  # before login: double submit
        browser.set_csrf(response, settings, csrf)
    return response


def _slow_down_words(exc: TooManyAttempts | Busy) -> str:
    if isinstance(exc, TooManyAttempts) and not isinstance(exc, TooManyAtOnce):
        return (f"Too many failed sign-ins. Try again in {exc.retry_after} seconds.")
    return "Too many sign-ins at once. Try again in a moment."


def _error_page(request: Request, message: str) -> Response:
    return _page(request, "error.html", {"message": message}, status=400)


def failure_page(request: Request, status: int, cause: str,
                 headers: Mapping[str, str]) -> Response:
    """The sign-in or consent page's answer to a failure no handler caught (a database that
    cannot be reached, say), with the status and `Retry-After` the API's answer would have."""
    from app.console.web import FAILURES

    retry = {"Retry-After": headers["retry-after"]} if "retry-after" in headers else None
    return _page(request, "error.html", {"message": FAILURES.get(cause, FAILURES["error"])},
                 status=status, headers=retry)


def refusal_page(request: Request, status: int, message: str) -> Response:
    """A refusal of the request itself (a form Starlette cannot read, a method the endpoint
    does not take), as the sign-in and consent pages show errors."""
    return _page(request, "error.html", {"message": message}, status=status)


@dataclass
class Standing:
    """What this user may do with this integration in their plan (rules 6 and 11)."""

    blocked: str | None = None  # shown on the consent page; only Deny is offered
    denied: tuple[str, str] | None = None  # (error, description) sent back to the client
    install: bool = False  # allowing installs a third-party integration for the plan
    widen: list[str] = field(default_factory=list)  # allowing approves these for the plan too
    approved: list[str] = field(default_factory=list)  # approved for the plan so far
    review: str | None = None  # a warning about the integration's platform review
    review_urgent: bool = False  # its deadline is near or past


def _refused(access: Access) -> tuple[str, str]:
    """RFC 6749 §4.1.2.1: the client is not authorized to get a code (rule 6)."""
    return "unauthorized_client", callers.description(access)


# How soon a review deadline must be for the consent screen to call it near.
NEAR = timedelta(days=7)


def _review_warning(integ: Integration, now: datetime) -> tuple[str | None, bool]:
    """Rule 6 in plain words, for an integration subject to review and not approved."""
    facts = facts_of(integ)
    if not facts.subject_to_review or integ.review_status == ReviewStatus.approved:
        return None, False
    status = integ.review_status.replace("_", " ")
    deadline = integ.review_deadline
    if deadline is not None and now < deadline:
        days = (deadline - now).days
        when = f"{deadline:%d %B %Y, %H:%M} UTC"
        soon = " That is less than a week away." if deadline - now <= NEAR else \
            f" That is in {days} days."
        return (f"{integ.name} has not passed the platform's review yet (status: {status}). "
                f"It works until {when}; if its review is not approved by then, it stops "
                f"working in your plan.{soon}", deadline - now <= NEAR)
    if review.exception_runs(facts, now):
        return (f"{integ.name} has not passed the platform's review and its deadline has "
                f"passed. It works under an exception until "
                f"{integ.exception_until:%d %B %Y, %H:%M} UTC, and stops working then unless "
                "its review is approved.", True)
    return None, True  # refused: never shown, the request goes back to the client


async def _standing(session: AsyncSession, req: AuthRequest, user: User,
                    now: datetime) -> Standing:
    integ = req.integration
    if integ.kind == "platform":
        return Standing(denied=("unauthorized_client", "a platform resource server obtains no "
                                                       "tokens"))
    if integ.kind == "custom" and integ.plan_id != user.plan_id:
        return Standing(denied=("access_denied",
                                "this application is not available in your plan"))
    # Rule 6 as a whole (a revoked review, a passed deadline without exception): nobody can
    # authorize it, and no admin can install it.
    facts = facts_of(integ)
    if not (whole := decide(facts, "active", now)).allowed:
        return Standing(denied=_refused(whole))
    inst = await integrations.installation(session, integ.id, user.plan_id)
    if inst is not None:
        access = decide(facts, inst.state, now)
        if not access.allowed:
            return Standing(denied=_refused(access))
    approved = list(inst.approved_scopes or ()) if inst is not None else []
    if inst is not None and not req.scope_sent:
        # RFC 6749 §3.3: no scope asked: what the plan approved (and the user may grant).
        req.scopes = [s for s in integ.scopes if s in approved
                      and (user.role == "admin" or s not in catalogue.ADMIN_SCOPES)]
        if not req.scopes:
            return Standing(denied=("invalid_scope", "nothing this application may ask for "
                                                     "is approved in your plan"))
    if user.role != "admin" and catalogue.ADMIN_SCOPES & set(req.scopes):
        return Standing(denied=("access_denied",
                                "only a plan admin can grant admin permissions"))
    warning, urgent = _review_warning(integ, now)
    standing = Standing(approved=approved, review=warning, review_urgent=urgent)
    if inst is None:
        if integ.kind != "third_party":  # a custom integration is installed when created
            return Standing(denied=_refused(Access(False, Rule.not_installed)))
        if user.role != "admin":
            standing.blocked = (f"{integ.name} is not installed in your plan. Ask a plan admin "
                                "to install it first.")
        else:
            standing.install = True
        return standing
    beyond = [s for s in req.scopes if s not in approved]
    if beyond and user.role != "admin":
        standing.blocked = (f"{integ.name} asks for permissions your plan has not approved "
                            f"for it ({', '.join(beyond)}). Only a plan admin can approve "
                            "them.")
    elif beyond:
        standing.widen = beyond
    return standing


async def _user(session: AsyncSession, request: Request, settings: Settings) -> User | None:
    user_id = browser.session_user(request, settings)
    return await session.get(User, user_id) if user_id else None


async def _consent_page(request: Request, session: AsyncSession, req: AuthRequest, user: User,
                        standing: Standing) -> Response:
    plan = await session.get(Plan, user.plan_id)
    plan_name = plan.name if plan else ""
    name = req.integration.name
    note = None
    if standing.install:
        note = (f"Allowing installs {name} for the whole plan {plan_name}. From then on "
                f"{name} can also get tokens for the plan on its own, without anyone signed "
                "in (machine access), with the permissions listed above and no others. "
                "Members of the plan can then allow it for themselves, within these "
                "permissions. A plan admin can deactivate it at any time.")
    elif standing.widen:
        note = (f"{name} is installed in your plan with these permissions: "
                f"{', '.join(standing.approved) or 'none'}. Allowing also approves "
                f"{', '.join(standing.widen)} for the whole plan, including for {name} on its "
                "own, without anyone signed in (machine access).")
    return _page(request, "consent.html", {
        "client_name": name, "params": req.params,
        "permissions": [(s, catalogue.CATALOGUE[s]) for s in req.scopes],
        "install_note": note, "blocked": standing.blocked, "user_email": user.email,
        "plan_name": plan_name, "review": standing.review, "review_urgent":
        standing.review_urgent,
    })


async def _handle(request: Request, session: AsyncSession, settings: Settings, now: datetime,
                  params: dict[str, str], repeated: list[str],
                  form: dict[str, str] | None) -> Response:
    try:
        req = await _validate(session, params, repeated)
    except PageError as exc:
        return _error_page(request, str(exc))
    except RedirectError as exc:
        return _to_client(exc.request, settings, error=exc.error,  # type: ignore[attr-defined]
                          error_description=exc.description)

    if form is not None and not (browser.posted_from_here(request, settings)
                                 and browser.csrf_ok(request, settings, form.get("csrf_token"))):
        return _error_page(request, "The form has expired or was not sent from this page. "
                                    "Go back to the application and start again.")
    action = (form or {}).get("action")

    if action == "login":
        try:
            user = await users.sign_in(
                session, form.get("email", ""), form.get("password", ""), via="password",
                now=now, client_id=req.integration.client_id,
                throttles=request.app.state.throttles,
                source=request.client.host if request.client else None)
        except (TooManyAttempts, Busy) as exc:
            return _page(request, "login.html", {
                "client_name": req.integration.name, "params": req.params,
                "error": _slow_down_words(exc), "email": form.get("email", "")},
                status=exc.status_code, headers=exc.headers)
        if user is None:
            return _page(request, "login.html", {
                "client_name": req.integration.name, "params": req.params,
                "error": "Wrong email or password.", "email": form.get("email", "")},
                status=401)
        # Post/redirect/get: the consent page is fetched afresh, with the new session.
        response = RedirectResponse(f"/oauth2/authorize?{urlencode(req.params)}",
                                    status_code=303, headers=browser.PAGE_HEADERS)
        browser.start_session(response, settings, user.id)
        await audit.record(session, f"user:{user.id}", "user.signed_in", user.plan_id, "user",
                           user.id, now, via="password", client_id=req.integration.client_id)
        return response

    user = await _user(session, request, settings)
    if user is None:
        return _page(request, "login.html", {"client_name": req.integration.name,
                                             "params": req.params, "error": None, "email": ""})
    standing = await _standing(session, req, user, now)
    if standing.denied:
        error, description = standing.denied
        return _to_client(req, settings, error=error, error_description=description)
    if action != "consent":
        return await _consent_page(request, session, req, user, standing)
    if form.get("decision") != "allow" or standing.blocked:
        return _to_client(req, settings, error="access_denied",
                          error_description="the user denied the request")
    if standing.install or standing.widen:
        await _approve(session, req, user, standing, now)
    code = credentials.generate(SecretKind.code)
    session.add(AuthorizationCode(
        id=uuid.uuid4(), digest=credentials.digest(code), integration_id=req.integration.id,
        plan_id=user.plan_id, user_id=user.id, redirect_uri=req.redirect_uri,
        redirect_uri_sent=req.redirect_uri_sent,
        scopes=catalogue.join(req.scopes), code_challenge=req.challenge,
        code_challenge_method="S256", issued_at=now, dpop_jkt=req.params.get("dpop_jkt"),
        expires_at=now + timedelta(seconds=settings.authorization_code_ttl_seconds)))
    await audit.record(session, f"user:{user.id}", "integration.authorized", user.plan_id,
                       "integration", req.integration.id, now, scopes=catalogue.join(req.scopes))
    return _to_client(req, settings, code=code)


async def _approve(session: AsyncSession, req: AuthRequest, user: User, standing: Standing,
                   now: datetime) -> None:
    """An admin's consent installs a third-party integration for the plan with the scopes it
    asked for, or widens an installation's approved scopes by those it newly asked for: what
    the screen said (rule 11). Both are audit events and reach every replica's cache."""
    scopes = catalogue.join(req.scopes).split()
    if standing.install:
        await integrations.install(session, req.integration, user.plan_id, user.id, scopes, now)
    else:
        await integrations.widen(session, req.integration, user.plan_id, user.id,
                                 list(standing.widen), now)


@router.get("/oauth2/authorize")
async def authorize_page(request: Request, session: Session, settings: AppSettings,
                         now: Now) -> Response:
    params, repeated = single_valued(request.query_params.multi_items())
    return await _handle(request, session, settings, now, params, repeated, None)


@router.post("/oauth2/authorize")
async def authorize_form(request: Request, session: Session, settings: AppSettings,
                         now: Now) -> Response:
    raw = await request.form(max_files=0, max_fields=40)
    form, repeated = single_valued([(k, v) for k, v in raw.multi_items() if isinstance(v, str)])
    return await _handle(request, session, settings, now, form, repeated, form)

