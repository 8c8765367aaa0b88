"""Reading OAuth request bodies (RFC 6749 §3.2: form-encoded; §3.1: no repeated parameters)."""

from __future__ import annotations

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from starlette.requests import Request

_FORM = "application/x-www-form-urlencoded"


async def read_form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != _FORM:
        raise InvalidRequestError(description=f"the request body must be {_FORM}")
    form = await request.form(max_files=0, max_fields=50)
    params: dict[str, str] = {}
    for key, value in form.multi_items():
        if not isinstance(value, str):
            raise InvalidRequestError(description="file uploads are not accepted")
        if key in params:
            raise InvalidRequestError(description=f"parameter '{key}' is repeated")
        params[key] = value
    return params
