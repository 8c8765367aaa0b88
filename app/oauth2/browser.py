"""The browser side of `/oauth2/authorize`: the signed login session and CSRF tokens."""

from __future__ import annotations

import hmac
import secrets
import uuid

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from app.config import Settings

SESSION_COOKIE = "tessera_session"
CSRF_COOKIE = "tessera_csrf"
SESSION_MAX_AGE = 3600

# Pages of the authorization flow are never framed (clickjacking), cached or sniffed.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key.get_secret_value(), salt="tessera-login")


def session_user(request: Request, settings: Settings) -> uuid.UUID | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    try:
        data = _serializer(settings).loads(raw, max_age=SESSION_MAX_AGE)
        return uuid.UUID(data["uid"])
    except (BadSignature, KeyError, ValueError, TypeError):
        return None


def start_session(response: Response, settings: Settings, user_id: uuid.UUID) -> None:
    response.set_cookie(SESSION_COOKIE, _serializer(settings).dumps({"uid": str(user_id)}),
                        max_age=SESSION_MAX_AGE, httponly=True, samesite="lax",
                        secure=settings.secure_cookies, path="/oauth2/")


def csrf_token(request: Request) -> str:
    """The double-submit token: the cookie's value, or a new one to set."""
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)


def set_csrf(response: Response, settings: Settings, token: str) -> None:
    response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="lax",
                        secure=settings.secure_cookies, path="/oauth2/")


def csrf_ok(request: Request, submitted: str | None) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE)
    return bool(cookie and submitted) and hmac.compare_digest(cookie, submitted or "")
