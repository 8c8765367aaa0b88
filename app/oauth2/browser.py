"""The browser side of `/oauth2/authorize` and of the console (`app.console`): the signed login
session and CSRF tokens. One sign-in serves both (the cookies' path is the whole site); the
management API never reads them (it takes bearer tokens only)."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

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
    # No referrer to another site (the authorization request's parameters stay here); to this
    # site the browser then sends its `Origin` on a form post, which `posted_from_here` reads
    # (with `no-referrer`, it would send `Origin: null`).
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return _serializer_for(tuple(settings.secret_keys))


@functools.lru_cache(maxsize=8)
def _serializer_for(keys: tuple[str, ...]) -> URLSafeTimedSerializer:
    # itsdangerous signs with the last key and verifies with each: ours are signing key first.
    # Made once per set of keys: it derives its signing keys when made (each page read one).
    return URLSafeTimedSerializer(list(reversed(keys)), salt="tessera-login")


@dataclass(frozen=True, slots=True)
class LoginSession:
    user_id: uuid.UUID
    sid: str  # random per login: the CSRF token of its forms is derived from it


_READ = "tessera.login_session"


def login_session(request: Request, settings: Settings) -> LoginSession | None:
    """The request's login session, if its cookie is valid (read once per request)."""
    if _READ in request.scope:
        return request.scope[_READ]
    found = None
    raw = request.cookies.get(SESSION_COOKIE)
    if raw and _MADE_HERE.fullmatch(raw):
        verified = _verified(tuple(settings.secret_keys), raw)
        if verified is not None:
            session, signed = verified
            # itsdangerous' own age check: whole seconds, and none signed in the future.
            if 0 <= int(time.time()) - signed <= SESSION_MAX_AGE:
                found = session
    request.scope[_READ] = found
    return found


# What `start_session` sets: base64url text and dots, ~130 characters. Anything else is not a
# cookie of ours, whatever itsdangerous would make of it (its base64 decoding skips characters
# outside the alphabet, so a good cookie with junk added would still verify).
_MADE_HERE = re.compile(r"[A-Za-z0-9_.\-]{1,512}")

# Cookies whose signature was found good, by value, each with its signing time: a console page
# checks its cookie's signature (base64, JSON, an HMAC per key: ~50 µs) once per cookie, not on
# every page; its age is still checked on each. Only good cookies are kept (none can be made
# without the key), of at most 512 characters, at most `_KEPT` of them (2 MB at most), the
# oldest forgotten first.
_KEPT = 4096
_GOOD: dict[tuple[tuple[str, ...], str], tuple[LoginSession, int]] = {}


def _verified(keys: tuple[str, ...], raw: str) -> tuple[LoginSession, int] | None:
    known = _GOOD.get((keys, raw))
    if known is not None:
        return known
    try:
        data, signed = _serializer_for(keys).loads(raw, return_timestamp=True)
        known = LoginSession(uuid.UUID(data["uid"]), str(data["sid"])), int(signed.timestamp())
    except (BadSignature, KeyError, ValueError, TypeError):
        return None
    if len(_GOOD) >= _KEPT:
        del _GOOD[next(iter(_GOOD))]
    _GOOD[(keys, raw)] = known
    return known


def session_user(request: Request, settings: Settings) -> uuid.UUID | None:
    session = login_session(request, settings)
    return session.user_id if session else None


def start_session(response: Response, settings: Settings, user_id: uuid.UUID) -> None:
    """A new session (and so a new CSRF token) at every login: none is carried over."""
    value = _serializer(settings).dumps({"uid": str(user_id), "sid": secrets.token_urlsafe(16)})
    response.set_cookie(SESSION_COOKIE, value, max_age=SESSION_MAX_AGE, httponly=True,
                        samesite="lax", secure=settings.cookies_secure, path="/")


def end_session(response: Response, settings: Settings) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax",
                           secure=settings.cookies_secure)


def bound_token(settings: Settings, sid: str, key: str | None = None) -> str:
    """The CSRF token of a signed-in session's forms: an HMAC of its id (with the signing key,
    or `key`), so it cannot be planted (a cookie set by a sibling host) or carried to another
    session."""
    secret = (key or settings.secret_keys[0]).encode()
    mac = hmac.new(secret, f"tessera-csrf\0{sid}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def bound_ok(settings: Settings, sid: str, submitted: str | None) -> bool:
    """`submitted` is the session's CSRF token under any of the keys (a page made before a key
    rotation still works); anything not ASCII cannot match."""
    if not submitted or not submitted.isascii():
        return False
    return any(hmac.compare_digest(bound_token(settings, sid, key).encode(), submitted.encode())
               for key in settings.secret_keys)


def csrf_token(request: Request, settings: Settings) -> str:
    """The token a page's form carries: bound to the login session when there is one;
    before login (the login form itself), a double-submit token: the cookie's value, or a new
    one to set."""
    session = login_session(request, settings)
    if session is not None:
        return bound_token(settings, session.sid)
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)


def set_csrf(response: Response, settings: Settings, token: str) -> None:
    response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="lax",
                        secure=settings.cookies_secure, path="/")


def csrf_ok(request: Request, settings: Settings, submitted: str | None) -> bool:
    """The submitted token matches the session's (or, before login, the double-submit
    cookie's). Anything that is not ASCII cannot match, and is compared as nothing."""
    if not submitted or not submitted.isascii():
        return False
    session = login_session(request, settings)
    if session is not None:
        return bound_ok(settings, session.sid, submitted)
    expected = request.cookies.get(CSRF_COOKIE)
    if not expected or not expected.isascii():
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode())


def posted_from_here(request: Request, settings: Settings) -> bool:
    """A form post that a page of this site sent, as far as the browser tells (login CSRF: a
    form another site posts, even with a cookie it planted, is refused). Fetch metadata
    (`Sec-Fetch-Site`) when sent; else `Origin`, else `Referer`, must name this host (as the
    request reached it, or the issuer's). A client that sends none of them is no browser that
    another site could drive."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    if site is not None:
        return True
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is None:
        return True
    host = urlsplit(source).netloc.lower()  # "null" (an opaque origin) names no host
    return bool(host) and host in {request.headers.get("host", "").lower(),
                                   urlsplit(settings.issuer).netloc.lower()}
