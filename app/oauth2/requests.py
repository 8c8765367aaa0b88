"""Reading OAuth request bodies (RFC 6749 §3.2: form-encoded; §3.1: no repeated parameters).

Parsed with `urllib.parse.parse_qsl` (the body is small and whole): python-multipart's streaming
parser cost about twice as much per request on the token and introspection endpoints
(bench/NOTES.md). Names and values are decoded as Starlette's form parser does.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from starlette.requests import Request

_FORM = "application/x-www-form-urlencoded"
MAX_BODY_BYTES = 64 * 1024
MAX_FIELDS = 50


def _too_large() -> InvalidRequestError:
    return InvalidRequestError(description=f"the request body exceeds {MAX_BODY_BYTES} bytes",
                               status_code=413)


async def _body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "")
    require_form(content_type)
    return parse_form(await _body(request))


def require_form(content_type: str) -> None:
    if content_type.split(";")[0].strip().lower() != _FORM:
        raise InvalidRequestError(description=f"the request body must be {_FORM}")


def parse_form(body: bytes) -> dict[str, str]:
    """The parameters of a form-encoded body; a repeated one, or too many, are refused."""
    try:
        pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True,
                          max_num_fields=MAX_FIELDS)
    except ValueError:
        raise InvalidRequestError(description="too many parameters") from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise InvalidRequestError(description=f"parameter '{key}' is repeated"
                                      if _DESCRIBABLE.fullmatch(key) else
                                      "a parameter is repeated")
        params[key] = value
    return params


# What a parameter's name may be to be echoed in an `error_description`: RFC 6749 §5.2 allows
# %x20-21 / %x23-5B / %x5D-7E there, and Authlib refuses anything else with a ValueError (a
# 500). The name is the caller's; anything else is not named.
_DESCRIBABLE = re.compile(r"[\x20\x21\x23-\x26\x28-\x5b\x5d-\x7e]{1,40}")
