"""The one place that maps errors to the wire.

- OAuth endpoints (`/oauth2/*`): RFC 6749 §5.2 JSON (`error`, `error_description`), with the
  status and headers the Authlib error class carries (401 + `WWW-Authenticate` for clients).
- Everything else: `{"error": "<machine code>", "message": "<text>", ...}`.
- A database that cannot be reached is a 503 (fail closed), never a 500 or a false answer; so is
  a transaction the database aborted for a concurrent one (nothing written, retry).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from app.api.responses import JSON
from app.db import is_concurrency_abort, is_data_error
from app.errors import ApiError
from app.ops import metrics

log = logging.getLogger("tessera.errors")

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


DOMAIN_VALIDATION_CODES = {"per_plan_only", "invalid_period"}


def _is_oauth(request: Request) -> bool:
    return _is_oauth_path(request.url.path)


def _is_oauth_path(path: str) -> bool:
    return path.startswith("/oauth2/") and path != "/oauth2/authorize"


REALM = "tessera"


def _with_realm(challenge: str) -> str:
    """RFC 7617 §2: a Basic challenge names its realm (Authlib's carries only the error)."""
    scheme, _, params = challenge.partition(" ")
    if scheme.lower() != "basic" or "realm=" in params:
        return challenge
    return f'{scheme} realm="{REALM}"' + (f", {params}" if params else "")


def oauth_response(error: OAuth2Error) -> JSON:
    headers = {k: _with_realm(v) if k.lower() == "www-authenticate" else v
               for k, v in error.get_headers() if k.lower() != "content-type"}
    return JSON(dict(error.get_body()), status_code=error.status_code, headers=headers)


def _wire(status: int, code: str, message: str, headers: dict[str, str] | None = None,
          **extra: Any) -> JSON:
    """The API's error shape; never stored by a cache, as no answer of the API is."""
    return JSON({"error": code, "message": message, **extra}, status_code=status,
                headers={"Cache-Control": "no-store", **(headers or {})})


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Never echo `input`: it may hold a password or a secret.
    return [
        {"loc": [str(p) for p in err.get("loc", ())], "message": err.get("msg", ""),
         "type": err.get("type", "")}
        for err in exc.errors()
    ]


# PostgreSQL SQLSTATEs that mean "the database is not there for us", whatever the statement:
# connection exceptions (class 08), operator intervention (57P01 admin shutdown, 57P02 crash
# shutdown, 57P03 cannot connect now, 57P04 database dropped), too many connections, and a
# statement cancelled by the statement timeout (57014: the database did not answer in time).
_OUTAGE_SQLSTATE_PREFIXES = ("08", "57P", "53300", "57014")


def _is_db_outage(exc: BaseException) -> bool:
    # No pool connection came free in time (the pool is fixed: `app.db.make_engine`).
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or ""
        if sqlstate.startswith(_OUTAGE_SQLSTATE_PREFIXES):
            return True
        # No statement: the error came from opening a connection, so there is none to be had
        # (e.g. 55000 'database "x" is not currently accepting connections', 3D000 no database).
        return exc.statement is None
    return isinstance(exc, ConnectionError | TimeoutError | OSError)


def _is_console(request: Request) -> bool:
    return request.url.path == "/console" or request.url.path.startswith("/console/")


def _page(request: Request, status: int, message: str) -> Response:
    """A console page's error, as a page (`app.console`)."""
    from app.console import web

    return web.error_page(request, status, message)


def install(app: FastAPI) -> None:
    from app.console.web import FormRefused, SignInRequired, to_sign_in

    @app.exception_handler(SignInRequired)
    async def _sign_in(_request: Request, exc: SignInRequired) -> Response:
        return to_sign_in(exc.back, exc.to)

    @app.exception_handler(FormRefused)
    async def _form_refused(request: Request, _exc: FormRefused) -> Response:
        return _page(request, 403, "The form has expired or was not sent from this page. "
                                   "Reload the page and try again.")

    @app.exception_handler(OAuth2Error)
    async def _oauth(_request: Request, exc: OAuth2Error) -> JSON:
        return oauth_response(exc)

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> Response:
        if _is_page(request):
            return _browser_page(request, exc.status_code, exc.message)
        return JSON(exc.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        details = _validation_details(exc)
        if _is_page(request):
            return _browser_page(request, 422, "The request is not valid.")
        if _is_oauth(request):
            return oauth_response(InvalidRequestError(description="malformed request"))
        if any(d["type"] == "json_invalid" for d in details):
            return _wire(400, "malformed_json", "the request body is not valid JSON")
        # A domain rule broken by the body names itself as the code (e.g. `per_plan_only`).
        kinds = {d["type"] for d in details}
        if len(kinds) == 1 and (kind := kinds.pop()) in DOMAIN_VALIDATION_CODES:
            return _wire(422, kind, details[0]["message"], details=details)
        return _wire(422, "invalid_request", "the request is not valid", details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "error")
        if _is_page(request):
            # Starlette's own refusals of a form (too many fields or files, a part too large, a
            # body it cannot parse) as pages too.
            response = _browser_page(request, exc.status_code, {
                404: "There is no such page.", 405: "This page cannot do that.",
                413: "The form is too large."}.get(exc.status_code,
                                                    "The form could not be read."))
            response.headers.update(getattr(exc, "headers", None) or {})
            return response
        if _is_oauth(request) and exc.status_code in (404, 405):
            # RFC 6749 §5.2's shape on the OAuth endpoints; RFC 9110 §15.5.6: a 405 names the
            # methods the resource allows (`Allow`).
            description = {404: "no such endpoint", 405: "method not allowed"}[exc.status_code]
            return JSON({"error": "invalid_request", "error_description": description},
                        status_code=exc.status_code, headers=getattr(exc, "headers", None))
        message = {404: "no such resource", 405: "method not allowed"}.get(
            exc.status_code, str(exc.detail)
        )
        return _wire(exc.status_code, code, message, headers=getattr(exc, "headers", None))

    app.add_middleware(LastResort)


class LastResort:
    """Turns what no handler caught into the JSON shape: 503 for a lost database, else 500."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def _send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, _send)
        except Exception as exc:
            if started:
                raise
            request = Request(scope)
            answer: Response = _last_resort(request, exc)
            if _is_page(request):  # a person's browser: a page, not the API's JSON
                try:
                    answer = _failure_page(request, _cause_of(exc), answer)
                except Exception as again:  # noqa: BLE001 - the page failed too: the JSON
                    log.error("the page for a failure failed too: %s on %s %s",
                              type(again).__name__, request.method, request.url.path)
            await answer(scope, receive, send)


def _is_page(request: Request) -> bool:
    """A page a person's browser opens: the console's, or the authorization endpoint's sign-in
    and consent."""
    return _is_console(request) or request.url.path == "/oauth2/authorize"


def _failure_page(request: Request, cause: str, answer: Response) -> Response:
    """The last resort's `answer`, as the page of the console or of the authorization
    endpoint: its status and `Retry-After`, words for its `cause` (`_cause_of`)."""
    if _is_console(request):
        from app.console import web

        return web.failure_page(request, answer.status_code, cause, answer.headers)
    from app.oauth2 import authorize

    return authorize.failure_page(request, answer.status_code, cause, answer.headers)


def _browser_page(request: Request, status: int, message: str) -> Response:
    """A refusal on a page a person's browser opens (`_is_page`), as a page."""
    if _is_console(request):
        return _page(request, status, message)
    from app.oauth2 import authorize

    return authorize.refusal_page(request, status, message)


def outage_response(exc: BaseException, path: str) -> JSON | None:
    """The answer to a request to `path` that failed because the database cannot be reached:
    503, fail closed (RFC 6749 JSON on the OAuth endpoints); None for any other failure. Also
    used by the fast paths in front of the application (`app.main.serve`)."""
    if not _is_db_outage(exc):
        return None
    reason = "pool_timeout" if isinstance(exc, PoolTimeoutError) else \
        "timeout" if isinstance(exc, TimeoutError) else "unreachable"
    metrics.db_unavailable.inc(reason)
    log.warning("database unavailable: %s", type(exc).__name__,
                extra={"event": "database_unavailable", "reason": reason, "path": path})
    return _unavailable(path, "the authorization server cannot reach its store"
                        if _is_oauth_path(path) else "the service cannot reach its database")


def _unavailable(path: str, message: str) -> JSON:
    """503 with Retry-After: RFC 6749's `temporarily_unavailable` on the OAuth endpoints."""
    headers = {"Retry-After": "1", "Cache-Control": "no-store"}  # no cache keeps an outage
    if _is_oauth_path(path):
        return JSON({"error": "temporarily_unavailable", "error_description": message},
                    status_code=503, headers=headers)
    return _wire(503, "unavailable", message, headers=headers)


async def fast_response(attempt: Awaitable[Response | None], path: str) -> Response | None:
    """What a fast path in front of the application (`app.main.serve`) sends for a request to
    `path`: the response `attempt` made, the 503 of a lost database if it raised one, or None
    (the application answers) when it declined or failed otherwise."""
    try:
        return await attempt
    except Exception as exc:  # noqa: BLE001 - an outage is answered here; the rest goes on
        return outage_response(exc, path)


def failure_response(exc: Exception, method: str, path: str) -> JSON:
    """What the application answers when a request to an OAuth endpoint fails with `exc`: its
    RFC 6749 error, or the last resort (409, 503 or 500). For the fast paths in front of it
    (`app/oauth2/fast_path.py`), which must not run a request twice."""
    if isinstance(exc, OAuth2Error):
        return oauth_response(exc)
    if isinstance(exc, ApiError):
        return JSON(exc.body(), status_code=exc.status_code, headers=exc.headers)
    return _last_resort_for(exc, method, path)


def _last_resort(request: Request, exc: Exception) -> JSON:
    return _last_resort_for(exc, request.method, request.url.path)


def _cause_of(exc: Exception) -> str:
    """Why a request failed where no handler answered: "disconnect", "conflict", "outage",
    "aborted", "data" or "error". `_last_resort_for` answers by it, the pages choose their
    words by it."""
    if isinstance(exc, ClientDisconnect):
        return "disconnect"
    if isinstance(exc, IntegrityError):
        return "conflict"
    if _is_db_outage(exc):
        return "outage"
    if is_concurrency_abort(exc):
        return "aborted"
    if is_data_error(exc):
        return "data"
    return "error"


def _last_resort_for(exc: Exception, method: str, path: str) -> JSON:
    cause = _cause_of(exc)
    if cause == "disconnect":
        # The client went away before its body was read: nobody reads the answer, nothing was
        # done, and it is not an error of ours.
        log.info("%s %s: the client left before its request was read", method, path)
        message = "the request ended before its body did"
        if _is_oauth_path(path):
            return oauth_response(InvalidRequestError(description=message))
        return _wire(400, "invalid_request", message)
    if cause == "conflict":
        # A concurrent write won a uniqueness race: the caller's request conflicts, it is not ours.
        return _wire(409, "conflict", "the request conflicts with the current state; retry")
    if cause == "outage" and (outage := outage_response(exc, path)) is not None:
        return outage
    if cause == "aborted":
        # A deadlock or serialization failure: the transaction was rolled back, so nothing of
        # the request was written, and the same request may succeed at once.
        log.warning("%s %s aborted by the database for a concurrent transaction", method, path)
        return _unavailable(path, "a concurrent change interrupted the request; nothing was "
                                  "done, retry")
    if cause == "data":
        # A value the store refuses that validation let through (a NUL character, say): the
        # request's fault, and nothing of it was written.
        log.warning("%s %s: a value refused by the database (%s)", method, path,
                    getattr(exc.orig, "sqlstate", None) or type(exc).__name__)
        message = "a value in the request cannot be stored"
        if _is_oauth_path(path):
            return oauth_response(InvalidRequestError(description=message))
        return _wire(400, "invalid_request", message)
    # The exception type only: messages can carry request data.
    log.error("unhandled %s on %s %s", type(exc).__name__, method, path)
    return _wire(500, "internal_error", "an unexpected error occurred")
