"""The forward-auth decision: may this request's bearer token pass the gateway?

Rule 3 (an expired or revoked token stops at once), rule 6 (integration access) and RFC 6750 §3
(`WWW-Authenticate` challenges): the token's facts come from `app.tokens.repository` (through the
cache of `app.tokens.cache`) and its verdict from `app.tokens.rules.check`; nothing here restates
a rule. A gateway treats 2xx as "pass" and 401/403 as "refuse", so every refusal is one of those;
a database that cannot be reached raises, and the error mapping answers 503 (fail closed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app import credentials
from app.credentials import BEARER_KINDS
from app.oauth2 import dpop
from app.tokens import cache as token_cache
from app.tokens.batches import TokenReader
from app.tokens.cache import TokenCache
from app.tokens.repository import StoredToken
from app.tokens.rules import BEARER_TOKEN_KINDS, Inactive, TokenKind, check

# RFC 6749 §3.3: scope-token = 1*NQCHAR. Checked before a scope is echoed in a header.
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
# Personal tokens carry every permission of their user; the header says so with one "*".
ALL_SCOPES = "*"
_NO_STORE = {"Cache-Control": "no-store"}
_NOT_BEARER = "the token is malformed or not a bearer token"


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to the gateway: a status, headers for it (identity or challenge) and a body
    in the project's one error shape when refused."""

    status: int
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)


class BadScope(ValueError):
    """The gateway asked for a required scope that is not an RFC 6749 scope token."""


def required_scopes(*sources: str | None) -> frozenset[str]:
    """Every scope named by the query parameter(s) and `X-Required-Scope` header(s): all of them
    are required. Raises `BadScope` on anything that is not a scope token."""
    scopes: set[str] = set()
    for source in sources:
        if not source:
            continue
        for scope in source.replace(",", " ").split():
            if not _SCOPE_TOKEN.fullmatch(scope):
                raise BadScope("a required scope is not a valid scope token")
            scopes.add(scope)
    return frozenset(scopes)


def _challenge(error: str | None, description: str, **params: str) -> dict[str, str]:
    # Every value put here is ours or a validated scope token: nothing to escape.
    parts = ['Bearer realm="tessera"']
    if error:
        parts.append(f'error="{error}"')
        parts.append(f'error_description="{description}"')
    parts.extend(f'{k}="{v}"' for k, v in params.items())
    return {"WWW-Authenticate": ", ".join(parts), **_NO_STORE}


def _refuse(status: int, code: str, message: str, challenge_error: str | None,
            challenge: dict[str, str] | None = None, **extra: Any) -> Decision:
    headers = _challenge(challenge_error, message, **(challenge or {}))
    return Decision(status, headers, {"error": code, "message": message, **extra})


def unauthorized(message: str) -> Decision:
    return _refuse(401, "invalid_token", message, "invalid_token")


def dpop_refusal(code: str, message: str, nonce: str | None = None) -> Decision:
    """RFC 9449 §7.1: a refusal of a DPoP-bound request, with the DPoP challenge;
    `use_dpop_nonce` brings a nonce (§9)."""
    headers = {"WWW-Authenticate": dpop.challenge(code, message), **_NO_STORE}
    if nonce is not None:
        headers["DPoP-Nonce"] = nonce
    return Decision(401, headers, {"error": code, "message": message})


@dataclass(frozen=True, slots=True)
class Forwarded:
    """What the gateway passes of the request it asks about, for a DPoP-bound token (RFC 9449
    §4.3 steps 8-9): the client's `DPoP` header, its method and its URL."""

    proof: str | None
    method: str | None
    url: str | None
    proofs: int = 1  # how many DPoP headers came (§4.3 step 1: exactly one)

    @classmethod
    def of(cls, get: Any, own_method: str, original_path: str | None = None,  # noqa: ANN401
           proofs: int = 1) -> Forwarded:
        """From the check's headers (`get(name)`): the method in `X-Forwarded-Method` (Traefik)
        or `X-Original-Method` (nginx), else the check's own (Envoy forwards it as it came);
        the URL in `X-Original-URL`, else `X-Forwarded-Proto` (default https) + `X-Forwarded-
        Host` (else `Host`) + `X-Forwarded-Uri` (Traefik), `X-Original-URI` (nginx) or the
        path Envoy appends to the check's."""
        method = get("x-forwarded-method") or get("x-original-method") or own_method
        url = get("x-original-url")
        if url is None:
            path = get("x-forwarded-uri") or get("x-original-uri") or original_path
            host = get("x-forwarded-host") or get("host")
            if path is not None and host:
                proto = (get("x-forwarded-proto") or "https").split(",")[0].strip()
                url = f"{proto}://{host}{path if path.startswith('/') else '/' + path}"
        return cls(get("dpop"), method, url, proofs)


async def _proven(stored: StoredToken, token: str, forwarded: Forwarded | None,
                  now: datetime, dpop_state: Any) -> Decision | None:  # noqa: ANN401
    """None when the request proves possession of the token's key (RFC 9449 §7); else the
    refusal."""
    if forwarded is None or forwarded.proofs != 1 or not forwarded.proof:
        return dpop_refusal("invalid_dpop_proof", "exactly one DPoP proof must come with a "
                                                  "DPoP-bound token")
    if not forwarded.method or not forwarded.url:
        return dpop_refusal("invalid_dpop_proof", "the gateway did not pass the request's "
                                                  "method and URL")
    replays, nonces = dpop_state
    try:
        await dpop.possession([forwarded.proof], method=forwarded.method, url=forwarded.url,
                              now=now, replays=replays, nonces=nonces, access_token=token,
                              bound=stored.jkt)
    except dpop.UseDPoPNonce as exc:
        return dpop_refusal("use_dpop_nonce", exc.description, exc.nonce)
    except dpop.InvalidDPoPProof as exc:
        return dpop_refusal("invalid_dpop_proof", exc.description)
    return None


def missing_token() -> Decision:
    """RFC 6750 §3.1: a request with no credentials gets a challenge without an error code."""
    return _refuse(401, "missing_token", "a bearer token is required", None)


def presented_token(authorization: str | None) -> tuple[str, str] | None:
    """(scheme, token) of an `Authorization: Bearer <token>` or `DPoP <token>` header (RFC 6750
    §2.1, RFC 9449 §7.1), the scheme in lower case; None for anything else."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    value, scheme = value.strip(), scheme.lower()
    if scheme not in ("bearer", "dpop") or not value:
        return None
    return scheme, value


def _identity(stored: StoredToken, expiry: datetime | None) -> Decision:
    scopes = ALL_SCOPES if stored.kind == TokenKind.personal else stored.scopes
    subject = str(stored.user_id) if stored.user_id else (stored.client_id or "")
    headers = {
        "X-Tessera-Subject": subject,
        "X-Tessera-Plan": str(stored.plan_id),
        "X-Tessera-Scopes": scopes,
        "X-Tessera-Token-Kind": stored.kind,
        **_NO_STORE,
    }
    body: dict[str, Any] = {"active": True, "subject": subject, "plan": headers["X-Tessera-Plan"],
                            "scopes": scopes, "token_kind": stored.kind}
    if stored.client_id:
        headers["X-Tessera-Client"] = body["client"] = stored.client_id
    if expiry is not None:
        headers["X-Tessera-Expires-At"] = body["expires_at"] = expiry.isoformat()
    return Decision(200, headers, body)


def judge(stored: StoredToken | None, required: frozenset[str], now: datetime) -> Decision:
    """The decision for a looked-up token: pure, from its facts and the clock."""
    if stored is None:
        return unauthorized("unknown token")
    verdict = check(stored.facts, now)
    if not verdict.active:
        if verdict.reason is Inactive.integration_refused and verdict.access is not None:
            access = verdict.access
            deadline = access.deadline.isoformat() if access.deadline else None
            decision = _refuse(403, "integration_refused", f"refused: {access.describe()}",
                               "integration_refused", rule=str(access.rule), deadline=deadline)
            decision.headers["X-Tessera-Refusal-Rule"] = str(access.rule)
            if deadline:
                decision.headers["X-Tessera-Review-Deadline"] = deadline
            return decision
        return unauthorized(f"the token is {verdict.reason}")
    if required and stored.kind != TokenKind.personal:
        missing = required - frozenset(stored.scopes.split())
        if missing:
            needed = " ".join(sorted(required))
            return _refuse(403, "insufficient_scope", "the token lacks a required scope",
                           "insufficient_scope", {"scope": needed},
                           required_scope=needed)
    return _identity(stored, verdict.expiry)


def decide_cached(authorization: str | None, required: frozenset[str], now: datetime, *,
                  cache: TokenCache | None) -> Decision | None:
    """`decide` where no I/O is needed: no usable `Authorization`, or a bearer token the cache
    holds; None where the token must be read or a DPoP proof checked. Answers the same as
    `decide` (which it is the first part of), without an event loop (`app.serving`)."""
    presented = _presented_or_refused(authorization)
    if isinstance(presented, Decision):
        return presented
    scheme, secret = presented
    if scheme != "bearer" or cache is None:
        return None
    stored = cache.get(credentials.digest(secret), count=False)  # `decide` counts its own
    if stored is None:
        return None
    cache.counted_hits(tokens=1)
    return _presented(stored, scheme, required, now)


def _presented_or_refused(authorization: str | None) -> tuple[str, str] | Decision:
    """(scheme, token) of the request's `Authorization`, or the refusal of its absence or form."""
    if not authorization:
        return missing_token()
    presented = presented_token(authorization)
    if presented is None:
        return unauthorized("expected 'Authorization: Bearer <token>' or 'DPoP <token>'")
    return presented


def _presented(stored: StoredToken | None, scheme: str, required: frozenset[str],
               now: datetime) -> Decision:
    """The decision for a token presented with `scheme`, before any DPoP proof is checked."""
    if stored is not None and stored.kind not in BEARER_TOKEN_KINDS:
        return unauthorized(_NOT_BEARER)
    if stored is not None and stored.jkt is not None and scheme == "bearer":
        return dpop_refusal("invalid_token", "a DPoP-bound token is sent as 'Authorization: "
                                             "DPoP <token>' with a DPoP proof")
    if stored is not None and stored.jkt is None and scheme == "dpop":
        return unauthorized("the token is not DPoP-bound; send it as a bearer token")
    return judge(stored, required, now)


async def decide(authorization: str | None, required: frozenset[str], now: datetime, *,
                 cache: TokenCache | None, reader: TokenReader,
                 forwarded: Forwarded | None = None,
                 dpop_state: Any = None) -> Decision:  # noqa: ANN401
    """Forward-auth for one request. A cache hit touches no database; misses are read in
    batches, one SELECT for those of concurrent requests (no transaction around it). A
    DPoP-bound token passes only with `Authorization: DPoP` and a proof of its key for the
    request the gateway `forwarded` (RFC 9449 §7); `dpop_state`: (replays, nonces)."""
    presented = _presented_or_refused(authorization)
    if isinstance(presented, Decision):
        return presented
    scheme, secret = presented
    digest = credentials.digest(secret)
    # A cached entry is a stored token, so its string is well formed: the format check (a
    # checksum over the string) is needed only on the way to the database.
    stored = cache.get(digest) if cache is not None else None
    if stored is None:
        if credentials.kind_of(secret) not in BEARER_KINDS:
            return unauthorized(_NOT_BEARER)
        stored = await token_cache.read_missed(cache, digest, reader.find)
    decision = _presented(stored, scheme, required, now)
    if decision.status == 200 and scheme == "dpop" and stored is not None:
        refusal = await _proven(stored, secret, forwarded, now, dpop_state)
        if refusal is not None:
            return refusal
    return decision
