"""The permission catalogue: every scope a client may ask for, in plain words."""

from __future__ import annotations

CATALOGUE: dict[str, str] = {
    "profile": "See your name, email address and role",
    "tokens:read": "See your personal API tokens and when they expire",
    "tokens:write": "Create and revoke your personal API tokens",
    "data:read": "Read your plan's data through the platform API",
    "data:write": "Create, change and delete your plan's data through the platform API",
    "plan:read": "See your plan's token policy, tokens, integrations and audit log (admins only)",
    "plan:admin": "Change your plan's token policy, users, tokens and integrations (admins only)",
}

ADMIN_SCOPES = frozenset({"plan:read", "plan:admin"})


def parse(scope: str | None) -> list[str]:
    """RFC 6749 §3.3: space-delimited, case-sensitive; duplicates dropped, order kept."""
    seen: dict[str, None] = {}
    for item in (scope or "").split(" "):
        if item:
            seen[item] = None
    return list(seen)


def unknown(scopes: list[str]) -> list[str]:
    return [s for s in scopes if s not in CATALOGUE]


def join(scopes: list[str] | frozenset[str] | set[str]) -> str:
    order = list(CATALOGUE)
    return " ".join(sorted(scopes, key=lambda s: order.index(s) if s in order else len(order)))
