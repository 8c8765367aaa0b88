"""Client authentication (RFC 6749 §2.3.1): `client_secret_basic` and `client_secret_post`,
and `none` for public clients where the grant allows it. Secrets are compared as SHA-256 digests
in constant time (rule 10)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote_plus

from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError, OAuth2Error
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app import credentials
from app.auth.dependencies import basic_credentials
from app.db import for_many, of_dialect
from app.integrations.models import Installation, Integration
from app.plans.models import Plan
from app.throttle import store as throttle
from app.throttle.store import Throttles
from app.tokens.batches import Lookup
from app.tokens.cache import TokenCache

# A digest to compare against when the client does not exist, so timing tells nothing.
_NO_CLIENT = credentials.digest("no such client")
_CLIENT_ID_MAX = Integration.client_id.type.length  # the column's length


@dataclass(frozen=True, slots=True)
class ClientFacts:
    """What the token endpoint reads of an authenticated integration: a snapshot that can be
    cached (it is evicted with its integration by `cache.changed(integration_id=...)`)."""

    id: uuid.UUID
    client_id: str
    kind: str
    plan_id: uuid.UUID | None
    scopes: tuple[str, ...]
    confidential: bool
    can_introspect: bool
    review_status: str
    review_deadline: datetime | None
    exception_until: datetime | None
    data_access: str
    judged_third_party_at: datetime | None
    # A custom integration's installation in its own plan (None: none, or not custom).
    installation_state: str | None = None
    # RFC 9449 §5.2: every access token it gets is DPoP-bound (registered so, or a custom
    # integration of a plan that requires DPoP).
    dpop_bound_access_tokens: bool = False


@dataclass(frozen=True, slots=True)
class StoredClient:
    """A client as client authentication reads it: its facts and the digest of its secret
    (None for a public client)."""

    facts: ClientFacts
    secret_digest: str | None


_CLIENT_COLUMNS = (
    Integration.id, Integration.client_id, Integration.kind, Integration.plan_id,
    Integration.scopes, Integration.confidential, Integration.can_introspect,
    Integration.review_status, Integration.review_deadline, Integration.exception_until,
    Integration.data_access, Integration.judged_third_party_at, Installation.state,
    Integration.client_secret_digest, Integration.dpop_bound_access_tokens, Plan.dpop_required,
)
# Built once with bound parameters, as the token lookups are (app/tokens/repository.py). A
# custom integration's own installation comes with it: rule 6 judges it as a caller too.
_BY_CLIENT_IDS = for_many(
    select(*_CLIENT_COLUMNS).outerjoin(
        Installation, and_(Installation.integration_id == Integration.id,
                           Installation.plan_id == Integration.plan_id))
    .outerjoin(Plan, Plan.id == Integration.plan_id),
    Integration.client_id)


def _stored_client(row: tuple) -> StoredClient:
    (iid, client_id, kind, plan_id, scopes, confidential, can_introspect, review_status,
     review_deadline, exception_until, data_access, judged_at, state, secret_digest,
     dpop_bound, plan_requires) = row
    # A custom integration of a plan that requires DPoP is bound as if registered so.
    dpop_bound = bool(dpop_bound) or (kind == "custom" and bool(plan_requires))
    facts = ClientFacts(iid, client_id, kind, plan_id, tuple(scopes or ()), bool(confidential),
                        bool(can_introspect), review_status, review_deadline, exception_until,
                        data_access, judged_at, state, bool(dpop_bound))
    return StoredClient(facts, secret_digest)


async def find_clients(conn: AsyncConnection, client_ids: list[str]) -> dict[str, StoredClient]:
    query = of_dialect(_BY_CLIENT_IDS, conn.dialect.name)
    rows = (await conn.execute(query, {"keys": client_ids})).all()
    return {row[1]: _stored_client(tuple(row)) for row in rows}


class ClientReader(Lookup):
    """The clients that concurrent requests authenticate as (`find(client_id)`), read in one
    SELECT. A client's facts are read apart from the request's own unit of work, which never
    changes them.

    Measured with the token cache off, introspection cost ~1.4 ms of the server's CPU per
    request while the client was read through an ORM session, against ~0.1 ms for a gateway
    check whose only read is batched (bench/NOTES.md)."""

    read = staticmethod(find_clients)


@dataclass(frozen=True, slots=True)
class AuthenticatedClient:
    integration: ClientFacts
    method: str  # client_secret_basic | client_secret_post | none


def _basic(header: str | None) -> tuple[str, str] | None:
    """Basic client credentials, or None when the header is not Basic; a malformed one fails."""
    scheme = (header or "").partition(" ")[0]
    if scheme.lower() != "basic":
        return None
    decoded = basic_credentials(header)
    if decoded is None:
        raise _invalid("malformed Basic credentials")
    # §2.3.1: both parts are form-urlencoded before Basic encoding.
    return unquote_plus(decoded[0]), unquote_plus(decoded[1])


def _could_exist(client_id: str) -> bool:
    """Whether a client id is worth reading: ids are ours (`tc_` and hex, 64 characters at
    most). Anything else is unknown without a read, and must never reach the batched SELECT
    it would share with other requests: a NUL, say, fails the whole statement on PostgreSQL,
    and with it every request of the batch."""
    return 0 < len(client_id) <= _CLIENT_ID_MAX and client_id.isascii() and \
        client_id.isprintable()


def _invalid(description: str) -> InvalidClientError:
    return InvalidClientError(description=description, status_code=401)


class SlowDown(OAuth2Error):
    """Rule 12: too many failed client authentications from this client or source address.
    RFC 8628 §3.5's `slow_down` (registered for the token endpoint's responses), with 429 and
    `Retry-After`: the answer keeps RFC 6749 §5.2's shape."""

    error = "slow_down"
    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(description="too many failed client authentications; retry in "
                                     f"{retry_after} s")
        self.retry_after = retry_after

    def get_headers(self) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("Retry-After", str(self.retry_after))]


async def authenticate(authorization: str | None, reader: ClientReader, form: dict[str, str],
                       *, allow_public: bool, throttles: Throttles | None = None,
                       source: str | None = None,
                       now: datetime | None = None) -> AuthenticatedClient:
    """The client of a request with this `Authorization` header (None: absent) and form.

    Guessing is slowed (rule 12) without letting a guesser lock a client out: a wrong secret
    counts against the source address and the client id. An address that failed too often is
    refused before anything is checked (`SlowDown`, 429): the guesser's own. A client id that
    failed too often is not: its right secret still authenticates (from any other address),
    and its wrong ones are answered `SlowDown`. A client secret holds 256 random bits, so what
    the limits buy is the guesser's cost, counted per address; a legitimate client sharing a
    blocked address gets through with credentials already known good (the token cache)."""
    basic = _basic(authorization)
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

    guarded = throttles is not None and now is not None and method != "none"
    keys = throttle.secret_keys(client_id, source)  # the client id's, then the address's
    if guarded and len(keys) > 1 and (wait := await throttles.check(keys[1:], now)) is not None:
        raise SlowDown(wait)
    client = await reader.find(client_id) if _could_exist(client_id) else None
    if method == "none":
        if client is None or client.facts.confidential:
            raise _invalid("unknown client, or a confidential client without its secret")
        return AuthenticatedClient(client.facts, method)
    presented = credentials.digest(secret or "")
    stored = client.secret_digest if client and client.secret_digest else _NO_CLIENT
    if not credentials.digests_equal(presented, stored) or client is None:
        if guarded:
            # An unknown client id counts against the address only: guessed ids must not
            # fill the table.
            wait = await throttles.check(keys[:1], now) if client is not None else None
            await throttles.failed(keys if client is not None else keys[1:], now)
            if wait is not None:
                raise SlowDown(wait)
        raise _invalid("unknown client or wrong secret")
    return AuthenticatedClient(client.facts, method)


def credentials_key(header: str | None, form: dict[str, str], purpose: str) -> str | None:
    """A digest of the client credentials exactly as presented (the `Authorization` header, or
    client_id and client_secret in the body) and of what they are cached for: the same
    presentation always authenticates the same way."""
    if header and "client_secret" not in form:
        return credentials.digest(f"{purpose}\0basic\0{header}\0{form.get('client_id', '')}")
    if not header and "client_secret" in form:
        return credentials.digest(
            f"{purpose}\0post\0{form.get('client_id', '')}\0{form['client_secret']}")
    return None  # no credentials, or two methods at once: authenticate() says what is wrong


async def authenticate_cached(authorization: str | None, reader: ClientReader,
                              form: dict[str, str], cache: TokenCache | None, *,
                              allow_public: bool, purpose: str,
                              throttles: Throttles | None = None, source: str | None = None,
                              now: datetime | None = None) -> AuthenticatedClient:
    """`authenticate`, answered from the token cache for credentials (a secret) that
    authenticated before for the same `purpose` (`token`, `introspect`); a public client (no
    secret) is always read. Credentials known good are not throttled: a guesser's block never
    locks the client itself out."""
    key = credentials_key(authorization, form, purpose) if cache is not None else None
    if key is not None and (known := cache.get_client(key)) is not None:
        return known
    generation = cache.generation if cache is not None else 0
    client = await authenticate(authorization, reader, form, allow_public=allow_public,
                                throttles=throttles, source=source, now=now)
    if key is not None and client.method != "none":
        cache.put_client(key, client.integration.id, client, generation)
    return client
