"""Secrets: generation, format check, digests, and password hashing (rule 10, docs/design.md).

A token string is `<prefix>_<body><checksum>`: the prefix names its kind (so a leaked one can be
spotted by secret scanners), the body carries 256 random bits in base62, and the last six
characters are a CRC-32 of prefix and body, so a mistyped or truncated token is rejected without
touching the database. Only the SHA-256 digest of the whole string is stored: with 256 bits of
entropy a fast hash is the right storage, a slow one would only burn CPU on every call.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import zlib
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 43  # ceil(256 / log2(62))
_CHECK_LEN = 6  # 62**6 > 2**32


class SecretKind(StrEnum):
    personal = "tsp"
    integration = "tsi"
    access = "tsa"
    refresh = "tsr"
    client_secret = "tss"
    code = "tsc"
    operator = "tso"


# The secrets a resource server takes as `Bearer` (a gateway's check, the management API).
# Refresh tokens are not bearer credentials (RFC 6749 §1.5); operator tokens are for /v1 only.
BEARER_KINDS = frozenset({SecretKind.personal, SecretKind.integration, SecretKind.access})


def _base62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def _checksum(text: str) -> str:
    return _base62(zlib.crc32(text.encode()), _CHECK_LEN)


# Random bytes below 248 (4 x 62) map evenly onto the alphabet; the others are dropped. So each
# body character is uniform over the 62, and 43 of them carry 256 bits (bench/NOTES.md: the
# big-integer base62 conversion this replaces was 12% of a refresh's CPU).
_EVEN = 4 * len(_ALPHABET)
_TO_ALPHABET = bytes(ord(_ALPHABET[b % len(_ALPHABET)]) for b in range(_EVEN)).ljust(256, b"\0")
_UNEVEN = bytes(range(_EVEN, 256))
_KINDS = {kind.value: kind for kind in SecretKind}


def _random_body() -> str:
    body = b""
    while len(body) < _BODY_LEN:  # 64 bytes keep ~62 characters; a second draw is very rare
        body += secrets.token_bytes(64).translate(_TO_ALPHABET, _UNEVEN)
    return body[:_BODY_LEN].decode()


def generate(kind: SecretKind) -> str:
    head = f"{kind.value}_{_random_body()}"
    return head + _checksum(head)


def kind_of(token: str) -> SecretKind | None:
    """The kind a well-formed token claims, or None when its shape or checksum is wrong."""
    if len(token) != 4 + _BODY_LEN + _CHECK_LEN or token[3] != "_":
        return None
    kind = _KINDS.get(token[:3])
    if kind is None:
        return None
    head, check = token[:-_CHECK_LEN], token[-_CHECK_LEN:]
    rest = token[4:]
    if not (rest.isascii() and rest.isalnum()):  # the alphabet is exactly ASCII letters, digits
        return None
    if not hmac.compare_digest(_checksum(head), check):
        return None
    return kind


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def hint(secret: str) -> str:
    return secret[-4:]


def digests_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


# argon2id with the library's RFC 9106 "low memory" memory and time costs (64 MiB, 3 passes),
# on one lane: a check then keeps to one thread, so the bounded number of checks running at once
# (app/throttle/hashing.py) bounds the cores they take. (With the library's 4 lanes, one check
# ran 4 threads and took both cores of a small machine from the token checks: bench/NOTES.md.)
# Hashes made with other parameters still verify, and are remade at the next sign-in.
_hasher = PasswordHasher(parallelism=1)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Constant work whether or not the user exists: a missing hash still costs one verify."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
