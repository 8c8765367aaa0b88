"""Client authentication (RFC 6749 §2.3.1): `client_secret_basic` and `client_secret_post`,
and `none` for public clients where the grant allows it. Secrets are compared as SHA-256 digests
in constant time (rule 10)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import unquote_plus

from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from app import credentials
from app.integrations import service as integrations
from app.integrations.models import Integration

# A digest to compare against when the client does not exist, so timing tells nothing.
_NO_CLIENT = credentials.digest("no such client")


@dataclass(frozen=True, slots=True)
class AuthenticatedClient:
    integration: Integration
    method: str  # client_secret_basic | client_secret_post | none


def _basic(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _invalid("malformed Basic credentials") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise _invalid("malformed Basic credentials")
    # §2.3.1: both parts are form-urlencoded before Basic encoding.
    return unquote_plus(client_id), unquote_plus(secret)


def _invalid(description: str) -> InvalidClientError:
    return InvalidClientError(description=description, status_code=401)


async def authenticate(request: Request, session: AsyncSession, form: dict[str, str], *,
                       allow_public: bool) -> AuthenticatedClient:
    basic = _basic(request)
    if basic is not None and ("client_secret" in form):
        raise InvalidRequestError(description="use one client authentication method, not two")
    if basic is not None:
        client_id, secret, method = basic[0], basic[1], "client_secret_basic"
        if form.get("client_id") not in (None, client_id):
            raise InvalidRequestError(description="client_id does not match the credentials")
    elif "client_secret" in form:
        client_id, secret, method = form.get("client_id", ""), form["client_secret"], \
            "client_secret_post"
    elif form.get("client_id") and allow_public:
        client_id, secret, method = form["client_id"], None, "none"
    else:
        raise _invalid("client authentication is required")

    integ = await integrations.by_client_id(session, client_id) if client_id else None
    if method == "none":
        if integ is None or integ.confidential:
            raise _invalid("unknown client, or a confidential client without its secret")
        return AuthenticatedClient(integ, method)
    presented = credentials.digest(secret or "")
    stored = integ.client_secret_digest if integ and integ.client_secret_digest else _NO_CLIENT
    if not credentials.digests_equal(presented, stored) or integ is None:
        raise _invalid("unknown client or wrong secret")
    return AuthenticatedClient(integ, method)
