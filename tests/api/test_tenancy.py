"""Rule 9, tenancy: every `/v1` management operation called by a wrong principal is refused, and
the refused calls change nothing.

ROWS are the operations: on plan A's resources, on the caller's own account and tokens (or
another user's token), and the platform's own. EXPECTED gives, for every wrong principal (each
built through the HTTP API) and every kind of row, the refusal: another plan's admin, integration
token or OAuth token meets 404 `not_found` (another plan looks exactly like a plan that does not
exist), a member or a member's OAuth token 403 `admin_required`, a token without the scope 403
`insufficient_scope`, a caller with no user 403 `user_required` on `/v1/me`, anyone but an
operator 403 `operator_required` on the platform's routes, no credentials 401 with a Bearer
challenge. A control serves every row to its rightful principal, so no refusal here comes from a
mistyped path or an invalid body.

Rule 11: an OAuth access token or an integration token never creates credentials (a personal
token, a user, an integration, an integration token), whatever its scopes: 403
`personal_credentials_required`. Those cases are marked `# new: rule 11`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx2
import pytest

from tests.conftest import Member, PlanFixture
from tests.integrations.test_review_api import install
from tests.oauth2.browser import Browser, redirect_params
from tests.oauth2.conftest import REDIRECT, Registered, register_custom, register_third_party
from tests.oauth2.test_security import authorize_url, pkce

pytestmark = pytest.mark.asyncio

PASSWORD = "correct horse battery staple"
PERIOD = {"value": 90, "unit": "days"}
EVERY_SCOPE = ["profile", "tokens:read", "tokens:write", "data:read", "plan:read", "plan:admin"]
ADMIN_GRANT = "profile tokens:read tokens:write plan:read plan:admin"

# What a row asks of its caller: to read or administer plan A (plan:read / plan:admin), to be a
# user acting on itself (`me`, `mine`: its token list, `create`: a personal token for itself) or
# on another user's personal token (`theirs`), or to be a platform operator.
READ, WRITE, ME, MINE, CREATE, THEIRS, OPERATOR = GUARDS = (
    "read", "write", "me", "mine", "create", "theirs", "operator")
NEW_USER = {"email": "intruder-{A}@example.com", "name": "Intruder", "role": "admin",
            "password": PASSWORD}
NEW_INTEGRATION = {"name": "Intruder", "redirect_uris": [REDIRECT], "scopes": ["plan:admin"]}

# In an order in which their rightful principals can run them all (the control).
ROWS: list[tuple[str, str, str, dict[str, Any] | None]] = [
    (ME, "GET", "/v1/me", None),
    (MINE, "GET", "/v1/me/tokens", None),
    (CREATE, "POST", "/v1/me/tokens", {"name": "intruder"}),
    (THEIRS, "GET", "/v1/me/tokens/{target}/status", None),
    (THEIRS, "DELETE", "/v1/me/tokens/{target}", None),
    (READ, "GET", "/v1/plans/{A}/token-expiration", None),
    (WRITE, "PUT", "/v1/plans/{A}/token-expiration", {"value": 30, "unit": "days"}),
    (WRITE, "DELETE", "/v1/plans/{A}/token-expiration", None),
    (READ, "POST", "/v1/plans/{A}/token-expiration/preview", {"value": 30, "unit": "days"}),
    (READ, "GET", "/v1/plans/{A}/tokens", None),
    (READ, "GET", "/v1/plans/{A}/tokens/{target}/status", None),
    (WRITE, "DELETE", "/v1/plans/{A}/tokens/{target}", None),
    (WRITE, "POST", "/v1/plans/{A}/users", NEW_USER),
    (READ, "GET", "/v1/plans/{A}/users", None),
    (WRITE, "POST", "/v1/plans/{A}/integrations", NEW_INTEGRATION),
    (WRITE, "POST", "/v1/plans/{A}/integrations/{tool}/tokens", {}),
    (READ, "GET", "/v1/plans/{A}/integrations", None),
    (WRITE, "POST", "/v1/plans/{A}/integrations/{tp}/deactivate", None),
    (WRITE, "POST", "/v1/plans/{A}/integrations/{tp}/reactivate", None),
    (WRITE, "POST", "/v1/plans/{A}/integrations/{tool}/confirm-keep", None),
    (WRITE, "POST", "/v1/plans/{A}/integrations/{tool}/reports", {"message": "ours"}),
    (READ, "GET", "/v1/plans/{A}/audit", None),
    (OPERATOR, "POST", "/v1/integrations", {**NEW_INTEGRATION, "scopes": ["profile"]}),
    (OPERATOR, "GET", "/v1/integrations", None),
    (OPERATOR, "GET", "/v1/integrations/{tp}", None),
    (OPERATOR, "PUT", "/v1/integrations/{tp}/review", {"status": "revoked"}),
    (OPERATOR, "PUT", "/v1/integrations/{tp}/exception", {"until": "2026-03-01T00:00:00Z"}),
    (OPERATOR, "DELETE", "/v1/integrations/{tp}/exception", None),
    (OPERATOR, "PUT", "/v1/integrations/{tool}/judgement",
     {"deactivate_at": "2026-02-01T00:00:00Z"}),
    (OPERATOR, "DELETE", "/v1/integrations/{tool}/judgement", None),
    (OPERATOR, "GET", "/v1/integrations/{tool}/reports", None),
]
GROUPS = {"plan": {READ, WRITE}, "personal": {ME, MINE, CREATE, THEIRS}, "operator": {OPERATOR}}
RIGHTFUL = {READ: "admin of plan A", WRITE: "admin of plan A", OPERATOR: "platform operator"}

NF, ADMIN, SCOPE = (404, "not_found"), (403, "admin_required"), (403, "insufficient_scope")
USER, OPER, ANON = (403, "user_required"), (403, "operator_required"), (401, "unauthorized")
# new: rule 11: a token that may not create credentials may say so before saying why else not.
USER11 = (403, ("user_required", "personal_credentials_required"))
SCOPE11 = (403, ("insufficient_scope", "personal_credentials_required"))
_ = None  # the principal's own business, or its rightful one: not a wrong principal for the row
EXPECTED: dict[str, tuple[tuple[int, Any] | None, ...]] = {
    #                                    read   write  me    mine   create   theirs operator
    "admin of plan A":                  (_,     _,     _,    _,     _,       NF,    OPER),
    "admin of plan B":                  (NF,    NF,    _,    _,     _,       NF,    OPER),
    "member of plan A":                 (ADMIN, ADMIN, _,    _,     _,       NF,    OPER),
    "integration token of plan B":      (NF,    NF,    USER, USER,  USER11,  USER,  OPER),
    "data:read integration token of A": (SCOPE, SCOPE, USER, USER,  USER11,  USER,  OPER),
    "profile OAuth token of A member":  (ADMIN, ADMIN, _,    SCOPE, SCOPE11, SCOPE, OPER),
    # its `create` is a rule 11 case: test_tokens_of_integrations_never_create_credentials
    "admin OAuth token of plan B":      (NF,    NF,    _,    _,     _,       NF,    OPER),
    "platform operator":                (NF,    NF,    USER, USER,  USER,    USER,  _),
    "no credentials":                   (ANON,  ANON,  ANON, ANON,  ANON,    ANON,  ANON),
}


@dataclass
class World:
    ids: dict[str, str]  # A (the plan), target (a token of the victim), tool, tp (integrations)
    callers: dict[str, dict[str, str]]
    app: Registered  # plan A's custom integration with every scope


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_user(client: httpx2.AsyncClient, plan: PlanFixture, role: str) -> Member:
    email = f"{role}-{uuid.uuid4().hex[:10]}@example.com"
    r = await client.post(f"/v1/plans/{plan.plan_id}/users", headers=plan.admin.auth,
                          json={"email": email, "name": role, "role": role, "password": PASSWORD})
    assert r.status_code == 201, r.text
    user = Member(uuid.UUID(r.json()["id"]), email, PASSWORD, "")
    await user.renew(client)
    return user


async def integration_token(client: httpx2.AsyncClient, plan: PlanFixture, reg: Registered,
                            scopes: list[str]) -> dict[str, str]:
    r = await client.post(f"/v1/plans/{plan.plan_id}/integrations/{reg.id}/tokens",
                          json={"scopes": scopes}, headers=plan.admin.auth)
    assert r.status_code == 201, r.text
    return bearer(r.json()["token"])


async def oauth_token(app: Any, client: httpx2.AsyncClient, reg: Registered,  # noqa: ANN401
                      user: Member, scope: str) -> dict[str, str]:
    """The authorization-code flow with PKCE: `user` logs in and allows `scope`."""
    browser = Browser(app)
    try:
        verifier, challenge = pkce()
        back = await browser.authorize(authorize_url(reg.client_id, challenge, scope=scope),
                                       user.email, user.password)
        code = redirect_params(back)["code"]
    finally:
        await browser.close()
    r = await client.post("/oauth2/token", auth=(reg.client_id, reg.client_secret), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "code_verifier": verifier})
    assert r.status_code == 200 and r.json()["scope"] == scope, r.text
    return bearer(r.json()["access_token"])


@pytest.fixture
async def world(app, client, plan, other_plan, operator, clock) -> World:  # noqa: ANN001
    """Plan A with a period, a victim holding a target token, a custom integration judged
    third-party (tool), an installed third-party one (tp); and every wrong principal."""
    r = await client.put(f"/v1/plans/{plan.plan_id}/token-expiration", json=PERIOD,
                         headers=plan.admin.auth)
    assert r.status_code == 200, r.text
    victim, member = await new_user(client, plan, "member"), await new_user(client, plan, "member")
    r = await client.post("/v1/me/tokens", json={"name": "target"},
                          auth=(victim.email, victim.password))
    assert r.status_code == 201, r.text
    target = r.json()["id"]
    app_a = await register_custom(client, plan, name="App", scopes=EVERY_SCOPE)
    tool = await register_custom(client, plan, name="Tool")
    r = await client.put(f"/v1/integrations/{tool.id}/judgement", headers=operator,
                         json={"deactivate_at": (clock.now() + timedelta(days=14)).isoformat()})
    assert r.status_code == 200, r.text
    tp = await register_third_party(client, operator)
    await install(app, plan, tp)
    app_b = await register_custom(client, other_plan, name="B app", scopes=EVERY_SCOPE)
    callers = {
        "admin of plan A": plan.admin.auth,
        "admin of plan B": other_plan.admin.auth,
        "member of plan A": member.auth,
        "integration token of plan B": await integration_token(client, other_plan, app_b,
                                                               EVERY_SCOPE),
        "data:read integration token of A": await integration_token(client, plan, app_a,
                                                                    ["data:read"]),
        "profile OAuth token of A member": await oauth_token(app, client, app_a, member,
                                                             "profile"),
        "admin OAuth token of plan B": await oauth_token(app, client, app_b, other_plan.admin,
                                                         ADMIN_GRANT),
        "platform operator": operator,
        "no credentials": {},
        "victim": victim.auth,
    }
    # Every credential works: a refusal below is about who calls, not a broken token.
    b_users = f"/v1/plans/{other_plan.plan_id}/users"
    for name, path in [("admin of plan A", f"/v1/plans/{plan.plan_id}/users"),
                       ("admin of plan B", b_users), ("integration token of plan B", b_users),
                       ("admin OAuth token of plan B", b_users), ("member of plan A", "/v1/me"),
                       ("profile OAuth token of A member", "/v1/me"), ("victim", "/v1/me"),
                       ("data:read integration token of A", "/v1/gateway/check?scope=data:read"),
                       ("platform operator", "/v1/integrations")]:
        r = await client.get(path, headers=callers[name])
        assert r.status_code == 200, f"{name} GET {path}: {r.status_code} {r.text}"
    ids = {"A": str(plan.plan_id), "target": target, "tool": tool.id, "tp": tp.id}
    return World(ids, callers, app_a)


def fill(value: Any, ids: dict[str, str]) -> Any:  # noqa: ANN401
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    return value


async def call(client: httpx2.AsyncClient, w: World, caller: str, method: str, path: str,
               body: dict[str, Any] | None) -> httpx2.Response:
    extra = {} if body is None else {"json": fill(body, w.ids)}
    return await client.request(method, fill(path, w.ids), headers=w.callers[caller], **extra)


def refusal_mismatch(r: httpx2.Response, expected: tuple[int, Any]) -> str | None:
    """None when `r` is the expected refusal; else what it was instead."""
    status, codes = expected
    codes = (codes,) if isinstance(codes, str) else codes
    try:
        answer = r.json()
    except ValueError:
        answer = None
    error = answer.get("error") if isinstance(answer, dict) else None
    if 200 <= r.status_code < 300:
        return f"NOT REFUSED: {r.status_code} {r.text[:200]}"
    if r.status_code != status or error not in codes:
        return f"{r.status_code} {error!r}"
    if status == 401 and not r.headers.get("www-authenticate", "").startswith("Bearer"):
        return f"401 with WWW-Authenticate {r.headers.get('www-authenticate')!r}"
    return None


async def snapshot(client: httpx2.AsyncClient, w: World) -> dict[str, Any]:
    """What the refused calls could have changed, read by plan A's admin and the operator."""
    a, admin, op = f"/v1/plans/{w.ids['A']}", "admin of plan A", "platform operator"
    reads = {"period": (a + "/token-expiration", admin), "tokens": (a + "/tokens?limit=500", admin),
             "users": (a + "/users", admin), "installations": (a + "/integrations", admin),
             "audit": (a + "/audit?limit=200", admin),
             "target": (a + f"/tokens/{w.ids['target']}/status", admin),
             "integrations": ("/v1/integrations", op),
             "reports": (f"/v1/integrations/{w.ids['tool']}/reports", op)}
    state = {}
    for key, (path, caller) in reads.items():
        r = await client.get(path, headers=w.callers[caller])
        assert r.status_code == 200, f"{key}: {r.status_code} {r.text}"
        state[key] = r.json()
    return state


async def changes(client: httpx2.AsyncClient, w: World, before: dict[str, Any]) -> list[str]:
    """What differs from `before`: plan A's period, tokens, users, installations, audit, the
    target token (still active), the integrations and their reports."""
    after = await snapshot(client, w)
    changed = [f"{key} changed:\n  {value}\n  -> {after[key]}"
               for key, value in before.items() if after[key] != value]
    if after["period"]["period"] != PERIOD or not after["target"]["active"]:
        changed.append(f"period {after['period']['period']}, target {after['target']}")
    return changed


@pytest.mark.parametrize("group", list(GROUPS))
async def test_wrong_principals_are_refused_and_change_nothing(client, world, group) -> None:
    before = await snapshot(client, world)
    assert before["period"]["period"] == PERIOD and before["target"]["active"] is True
    cases, failures = 0, []
    for caller, cells in EXPECTED.items():
        for guard, method, path, body in ROWS:
            expected = cells[GUARDS.index(guard)]
            if guard not in GROUPS[group] or expected is None:
                continue
            cases += 1
            r = await call(client, world, caller, method, path, body)
            if (wrong := refusal_mismatch(r, expected)) is not None:
                failures.append(f"{method} {path} by {caller}: expected {expected}, got {wrong}")
    assert cases == {"plan": 136, "personal": 32, "operator": 72}[group]
    changed = await changes(client, world, before)
    assert not failures and not changed, f"{len(failures)} of {cases} not refused as " \
        "expected:\n" + "\n".join(failures + changed)


async def test_every_row_is_served_to_its_rightful_principal(client, world) -> None:
    """The control: the same requests succeed for plan A's admin, the victim (on their own
    token), an operator; so the refusals above are about who calls."""
    failures = []
    for guard, method, path, body in ROWS:
        caller = RIGHTFUL.get(guard, "victim")  # on their own token
        r = await call(client, world, caller, method, path, body)
        if not 200 <= r.status_code < 300:
            failures.append(f"{method} {path} by {caller}: {r.status_code} {r.text[:200]}")
    assert not failures, "\n".join(failures)


# new: rule 11: each of these tokens holds plan:admin (and tokens:write) in plan A.
RULE_11 = [
    ("admin OAuth token of A", "POST", "/v1/me/tokens", {"name": "minted"}),
    *[(holder, "POST", path, body)
      for holder, tag in [("admin OAuth token of A", "oauth"),
                          ("plan:admin integration token of A", "integration")]
      for path, body in [("/v1/plans/{A}/users", {**NEW_USER, "email": tag + "-{A}@example.com"}),
                         ("/v1/plans/{A}/integrations", NEW_INTEGRATION),
                         ("/v1/plans/{A}/integrations/{tool}/tokens", {})]],
]


async def test_tokens_of_integrations_never_create_credentials(app, client, plan,
                                                               world) -> None:
    # new: rule 11
    world.callers["admin OAuth token of A"] = await oauth_token(app, client, world.app,
                                                                plan.admin, ADMIN_GRANT)
    world.callers["plan:admin integration token of A"] = await integration_token(
        client, plan, world.app, ["plan:read", "plan:admin", "tokens:write"])
    for holder in ("admin OAuth token of A", "plan:admin integration token of A"):
        # They do administer plan A: they read it and revoke its tokens.
        a, headers = f"/v1/plans/{plan.plan_id}", world.callers[holder]
        assert (await client.get(a + "/users", headers=headers)).status_code == 200, holder
        spare = await client.post(a + f"/integrations/{world.ids['tool']}/tokens", json={},
                                  headers=plan.admin.auth)
        r = await client.delete(a + f"/tokens/{spare.json()['id']}", headers=headers)
        assert r.status_code == 204, f"{holder}: {r.status_code} {r.text}"
    before = await snapshot(client, world)
    failures = []
    for caller, method, path, body in RULE_11:
        r = await call(client, world, caller, method, path, body)
        if (wrong := refusal_mismatch(r, (403, "personal_credentials_required"))) is not None:
            failures.append(f"{method} {path} by {caller}: {wrong}")
    changed = await changes(client, world, before)
    assert not failures and not changed, f"{len(failures)} of {len(RULE_11)} not refused:\n" + \
        "\n".join(failures + changed)
