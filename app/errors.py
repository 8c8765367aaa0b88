"""Domain errors outside the OAuth endpoints. Each carries its wire code and status.

Every one of them reaches the client in one JSON shape (see `app/api/errors.py`):
`{"error": "<code>", "message": "<text>", ...extra}`.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status_code = 400
    code = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}


class InvalidRequest(ApiError):
    status_code = 422


class Unauthorized(ApiError):
    """RFC 6750 §3: a missing or invalid bearer credential."""

    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str, *, error: str | None = "invalid_token", **extra: Any) -> None:
        challenge = 'Bearer realm="tessera"'
        if error:
            challenge += f', error="{error}", error_description="{message}"'
        super().__init__(message, headers={"WWW-Authenticate": challenge}, **extra)


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class Unavailable(ApiError):
    status_code = 503
    code = "unavailable"


class TooManyAttempts(ApiError):
    """Rule 12: too many failed attempts at a guessable secret from this account or address;
    `Retry-After` says when to try again."""

    status_code = 429
    code = "too_many_attempts"

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message or f"too many failed attempts; try again in {retry_after} s",
                         headers={"Retry-After": str(retry_after)}, retry_after=retry_after)
        self.retry_after = retry_after


class TooManyAtOnce(TooManyAttempts):
    """Rule 12: this address has as many sign-ins waiting for a password check as it may (none
    of them need have failed)."""

    def __init__(self) -> None:
        super().__init__(1, "too many sign-ins from this address at once; try again in 1 s")


class Busy(ApiError):
    """Too many sign-ins wait for a password check at once (rule 12): retry shortly."""

    status_code = 503
    code = "busy"

    def __init__(self) -> None:
        super().__init__("too many sign-ins at once; try again in a moment",
                         headers={"Retry-After": "1"})
