"""DPoP (RFC 9449): a client proves, with every request, that it holds the private key a token
is bound to; a bound token that leaks is useless without that key.

`verify` checks one proof (§4.3) and gives the key's thumbprint (`jkt`, RFC 7638), which a bound
token records (`cnf.jkt`). The cryptography is joserfc's (signature, key import, thumbprint);
what is checked here is the proof's shape and claims. A proof is one-use: `Replays` remembers
each (key, `jti`) for as long as its `iat` is acceptable, in this process and, so that a proof
cannot be replayed on another replica either, in the database (`dpop_proofs`, one INSERT that a
second use finds taken).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749.errors import OAuth2Error
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, thumbprint
from joserfc.jws import JWSRegistry

# Asymmetric algorithms only (§4.3 step 5: never "none", never a MAC); advertised in the
# metadata as `dpop_signing_alg_values_supported`.
# "Ed25519" is RFC 9864's fully specified name for what "EdDSA" names (still accepted).
ALGORITHMS = ("ES256", "ES384", "Ed25519", "EdDSA", "RS256", "PS256")
_KEY_TYPES = {"EC", "OKP", "RSA"}
# Members that only a private key has: a proof carrying one is refused (§4.3 step 7).
_PRIVATE = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MAX_PROOF = 8192  # bytes: an RSA-4096 key and its signature fit many times over
# How old (and how far ahead, for clocks that run fast) a proof's `iat` may be.
WINDOW = timedelta(seconds=60)
SKEW = timedelta(seconds=5)
_KEYS_CACHED = 10_000
# joserfc's default registry allows 512 bytes of header: an RSA key in `jwk` needs more.
_REGISTRY = JWSRegistry(algorithms=list(ALGORITHMS))
_REGISTRY.max_header_length = 4096
_REGISTRY.max_payload_length = 4096


class InvalidDPoPProof(OAuth2Error):  # noqa: N818 - RFC 9449's error name
    """§5.3/§7.1: `invalid_dpop_proof`."""

    error = "invalid_dpop_proof"
    status_code = 400


class UseDPoPNonce(OAuth2Error):  # noqa: N818 - RFC 9449's error name
    """§8: the server wants a nonce from it in the proof; `DPoP-Nonce` carries one."""

    error = "use_dpop_nonce"
    status_code = 400

    def __init__(self, nonce: str, description: str = "a DPoP nonce is required") -> None:
        super().__init__(description=description)
        self.nonce = nonce

    def get_headers(self) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("DPoP-Nonce", self.nonce)]


@dataclass(frozen=True, slots=True)
class Proof:
    jkt: str  # the key's RFC 7638 SHA-256 thumbprint, base64url
    jti: str
    iat: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def ath(access_token: str) -> str:
    """§4.2: the access token's hash a proof sent with it carries."""
    return _b64(hashlib.sha256(access_token.encode("ascii", "replace")).digest())


@functools.lru_cache(maxsize=4096)
def htu(url: str) -> str | None:
    """A URL as §4.3 step 9 compares it: scheme and host lower case, default port dropped,
    no query or fragment (RFC 9110 §4.2.3 normalisation); None if it is not an http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path or '/'}"


@dataclass(frozen=True, slots=True)
class _Header:
    alg: str
    key: Any  # the public key, imported by joserfc
    jkt: str


class _Headers:
    """Proof headers by their encoded segment, checked and with their key imported: a client
    proves with the same key (so the same header) request after request, so each is parsed,
    checked and imported once (bench/NOTES.md: half of a proof's Python cost was there)."""

    def __init__(self, size: int = _KEYS_CACHED) -> None:
        self.size = size
        self.entries: OrderedDict[str, _Header] = OrderedDict()

    def get(self, segment: str) -> _Header:
        found = self.entries.get(segment)
        if found is not None:
            self.entries.move_to_end(segment)
            return found
        found = _header(segment)
        self.entries[segment] = found
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return found


def _json_segment(segment: str) -> Any:  # noqa: ANN401
    """A segment's JSON; ValueError for anything else, a nesting too deep to read included."""
    try:
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except RecursionError:
        raise ValueError("nested too deeply") from None


# The key type (and curve) each algorithm signs with: a proof whose jwk does not fit its alg
# is refused before joserfc is asked to verify with it.
_KEY_FOR_ALG = {"ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "Ed25519": ("OKP", "Ed25519"),
                "EdDSA": ("OKP", None), "RS256": ("RSA", None), "PS256": ("RSA", None)}


def _encodable(text: str) -> bool:
    """Text that is UTF-8 (a lone surrogate, which JSON can carry, is not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _ascii_equal(sent: object, expected: str) -> bool:
    """`sent` is the string `expected`, compared in constant time (non-ASCII never is)."""
    return isinstance(sent, str) and sent.isascii() and hmac.compare_digest(sent, expected)


def _header(segment: str) -> _Header:
    """§4.3 steps 4-7 on a proof's header: `typ`, an asymmetric `alg` we advertise, a public
    `jwk` (imported by joserfc; its RFC 7638 thumbprint by joserfc)."""
    if len(segment) > _REGISTRY.max_header_length:
        raise _refuse("the DPoP proof's header is too large")
    try:
        header = _json_segment(segment)
    except (ValueError, TypeError, UnicodeDecodeError):
        raise _refuse("the DPoP proof is not a JWT") from None
    if not isinstance(header, dict):
        raise _refuse("the DPoP proof is not a JWT")
    if header.get("typ") != "dpop+jwt":
        raise _refuse("the DPoP proof's typ must be dpop+jwt")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise _refuse(f"the DPoP proof's alg must be one of {' '.join(ALGORITHMS)}")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict) or jwk.get("kty") not in _KEY_TYPES:
        raise _refuse("the DPoP proof must carry its public key (jwk)")
    if _PRIVATE & set(jwk):
        raise _refuse("the DPoP proof's jwk must be a public key")
    kty, curve = _KEY_FOR_ALG[alg]
    if jwk.get("kty") != kty or (curve is not None and jwk.get("crv") != curve):
        raise _refuse(f"the DPoP proof's jwk is not a key for {alg}")
    try:
        key = JWKRegistry.import_key(jwk)
        return _Header(alg, key, thumbprint(jwk))
    except (JoseError, ValueError, TypeError, KeyError):
        raise _refuse("the DPoP proof's jwk is not a usable public key") from None


HEADERS = _Headers()


def _refuse(description: str) -> InvalidDPoPProof:
    return InvalidDPoPProof(description=description)


def verify(proof: str | None, *, method: str, url: str, now: datetime,
           access_token: str | None = None, nonces: Nonces | None = None) -> Proof:
    """§4.3: one proof, for a request with `method` to `url`, at `now`; with `access_token`,
    its hash too (§4.3 step 11). `nonces`, when the server requires them (§8). Raises
    `InvalidDPoPProof` (or `UseDPoPNonce`) saying what is wrong; replay is `Replays`' part."""
    if not proof:
        raise _refuse("a DPoP proof is required")
    if len(proof) > MAX_PROOF or proof.count(".") != 2 or not proof.isascii():
        raise _refuse("the DPoP proof is not a JWT")
    head, body, signature = proof.split(".")
    header = HEADERS.get(head)
    try:
        claims = _json_segment(body)
        signed = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    except (ValueError, TypeError, UnicodeDecodeError):
        raise _refuse("the DPoP proof is not a JWT") from None
    if not isinstance(claims, dict):
        raise _refuse("the DPoP proof's payload is not a JSON object")
    try:  # joserfc's algorithm checks the signature
        valid = _REGISTRY.get_alg(header.alg).verify(f"{head}.{body}".encode("ascii"), signed,
                                                      header.key)
    except (JoseError, ValueError, TypeError, AttributeError):
        valid = False
    if not valid:
        raise _refuse("the DPoP proof's signature does not verify with its jwk")
    jkt = header.jkt
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 1 <= len(jti) <= 256 or not _encodable(jti):
        raise _refuse("the DPoP proof needs a jti")
    if claims.get("htm") != method:
        raise _refuse("the DPoP proof's htm is not this request's method")
    sent = claims.get("htu")
    target = htu(url)
    if not isinstance(sent, str) or target is None or htu(sent) != target:
        raise _refuse("the DPoP proof's htu is not this request's URL")
    iat = claims.get("iat")
    if not isinstance(iat, int | float) or isinstance(iat, bool):
        raise _refuse("the DPoP proof needs an iat")
    try:
        issued = datetime.fromtimestamp(iat, UTC)
    except (OverflowError, OSError, ValueError):
        raise _refuse("the DPoP proof's iat is not a time") from None
    if not now - WINDOW <= issued <= now + SKEW:
        raise _refuse("the DPoP proof's iat is outside the accepted window")
    if access_token is not None:
        sent_ath = claims.get("ath")
        if not _ascii_equal(sent_ath, ath(access_token)):
            raise _refuse("the DPoP proof's ath is not this access token's hash")
    if nonces is not None:
        nonces.check(claims.get("nonce"), now)
    return Proof(jkt, jti, issued)


class Nonces:
    """§8 server nonces, made and checked by every replica alike: an HMAC of a time slot with
    the signing key. One is good for its slot and the next (`LIFETIME` to 2x), so a client
    that got one keeps using it a while."""

    LIFETIME = 300  # seconds

    def __init__(self, key: str) -> None:
        self.key = key.encode()

    def _for(self, slot: int) -> str:
        mac = hmac.new(self.key, f"tessera-dpop-nonce\0{slot}".encode(), hashlib.sha256)
        return _b64(mac.digest()[:18])

    def current(self, now: datetime) -> str:
        return self._for(int(now.timestamp()) // self.LIFETIME)

    def check(self, nonce: object, now: datetime) -> None:
        slot = int(now.timestamp()) // self.LIFETIME
        if not isinstance(nonce, str) or not any(
                _ascii_equal(nonce, self._for(s)) for s in (slot, slot - 1)):
            raise UseDPoPNonce(self.current(now),
                               "a DPoP nonce is required" if nonce is None
                               else "the DPoP nonce is stale; use the new one")


def replay_key(proof: Proof) -> str:
    return hashlib.sha256(f"{proof.jkt}\0{proof.jti}".encode()).hexdigest()


class Replays:
    """Each proof once. This process remembers the proofs it accepted while their `iat` is
    acceptable (a cheap first refusal); the database is the shared memory of every replica:
    `first_use` inserts the proof's key (with those of concurrent requests, in one statement:
    `app.oauth2.proofs.ProofRecorder`), and a proof whose key is there already is a replay.
    """

    def __init__(self, recorder: Any, size: int = 200_000) -> None:  # noqa: ANN401
        self.recorder = recorder
        self.size = size
        self.seen: OrderedDict[str, float] = OrderedDict()

    def _seen_here(self, key: str, until: float) -> bool:
        now = time.monotonic()
        while self.seen and next(iter(self.seen.values())) < now:
            self.seen.popitem(last=False)
        if key in self.seen:
            return True
        self.seen[key] = until
        if len(self.seen) > self.size:
            self.seen.popitem(last=False)
        return False

    async def first_use(self, proof: Proof, now: datetime) -> bool:
        """True the first time a proof is presented on any replica; False for a replay."""
        key = replay_key(proof)
        keep = proof.iat + WINDOW + SKEW
        if self._seen_here(key, time.monotonic() + max(
                (keep - now).total_seconds(), 0.0)):
            return False
        return await self.recorder.record(key, keep)


def challenge(error: str, description: str) -> str:
    """RFC 9449 §7.1: the `WWW-Authenticate` of a refused DPoP-bound request, naming the
    algorithms a proof may use."""
    return f'DPoP error="{error}", error_description="{description}", algs="{_ALGS}"'


_ALGS = " ".join(ALGORITHMS)


async def possession(proofs: list[str], *, method: str, url: str, now: datetime,
                     replays: Replays, nonces: Nonces | None, access_token: str | None = None,
                     bound: str | None = None) -> Proof:
    """The one proof of a request (§4.3 step 1: exactly one `DPoP` header), verified for its
    method and URL (and, with `access_token`, its hash), made with the key the token is
    `bound` to (if any), and used up (a replay, on any replica, is refused). Raises
    `InvalidDPoPProof` or `UseDPoPNonce`: every place that takes proofs (token endpoint,
    gateway check, management API) asks this."""
    if len(proofs) != 1:
        raise _refuse("exactly one DPoP proof must come with the request")
    proof = verify(proofs[0], method=method, url=url, now=now, access_token=access_token,
                   nonces=nonces)
    if bound is not None and proof.jkt != bound:
        raise _refuse("the DPoP proof is not made with the key the token is bound to")
    if not await replays.first_use(proof, now):
        raise _refuse("the DPoP proof was used before")
    return proof
