"""The same change sent many times at once: each real change of state is done and recorded
once, and the audit trail ends where the state does (an installation's deactivations and
reactivations; a token's revocation)."""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.oauth2.conftest import register_custom

pytestmark = pytest.mark.asyncio


async def _events(client, plan, target_id: str) -> list[str]:  # noqa: ANN001
    r = await client.get(f"/v1/plans/{plan.plan_id}/audit", params={"limit": 200},
                         headers=plan.admin.auth)
    assert r.status_code == 200, r.text
    return [e["action"] for e in reversed(r.json()["items"]) if e["target_id"] == target_id]


async def test_installation_changes_at_once_are_recorded_once_each(client, plan) -> None:  # noqa: ANN001
    custom = await register_custom(client, plan)
    base = f"/v1/plans/{plan.plan_id}/integrations/{custom.id}"
    answers = await asyncio.gather(*(client.post(f"{base}/deactivate", headers=plan.admin.auth)
                                     for _ in range(20)))
    assert {a.status_code for a in answers} <= {200, 503}, [a.text for a in answers]
    changes = [e for e in await _events(client, plan, str(custom.id))
               if e.startswith("installation.")]
    assert changes == ["installation.deactivated"]

    rng = random.Random(7)
    actions = [rng.choice(["deactivate", "reactivate"]) for _ in range(30)]
    answers = await asyncio.gather(*(client.post(f"{base}/{a}", headers=plan.admin.auth)
                                     for a in actions))
    assert {a.status_code for a in answers} <= {200, 503}
    changes = [e for e in await _events(client, plan, str(custom.id))
               if e.startswith("installation.")]
    # Every event is a real change, so from "active" they alternate deactivated, reactivated,
    # ... (the frozen clock gives them one instant, so they are counted, not ordered): as many
    # of each exactly when it ends active, one more deactivation when it ends deactivated.
    state = next(i for i in (await client.get(f"/v1/plans/{plan.plan_id}/integrations",
                                              headers=plan.admin.auth)).json()
                 if i["integration_id"] == str(custom.id))["state"]
    surplus = changes.count("installation.reactivated") - changes.count(
        "installation.deactivated")
    assert surplus == {"active": 0, "deactivated": -1}[state], (state, changes)


async def test_a_token_revoked_twenty_times_at_once_is_revoked_and_recorded_once(
        client, plan) -> None:  # noqa: ANN001
    member = await plan.add_user("member")
    token_id = (await client.get("/v1/me/tokens", headers=member.auth)).json()["items"][0]["id"]
    answers = await asyncio.gather(*(client.delete(f"/v1/me/tokens/{token_id}",
                                                   headers=member.auth) for _ in range(20)))
    # The first revokes it; the others find their token revoked (401) or revoke nothing (204).
    assert {a.status_code for a in answers} <= {204, 401, 503}
    assert sum(a.status_code == 204 for a in answers) >= 1
    r = await client.delete(f"/v1/plans/{plan.plan_id}/tokens/{token_id}",
                            headers=plan.admin.auth)
    assert r.status_code == 204
    assert (await _events(client, plan, token_id)).count("token.revoked") == 1
    r = await client.get(f"/v1/plans/{plan.plan_id}/tokens/{token_id}/status",
                         headers=plan.admin.auth)
    assert r.json()["revoked_reason"] == "revoked by its owner"


async def test_redirect_uris_with_controls_spaces_or_raw_unicode_are_refused(client, plan) -> None:  # noqa: ANN001
    for uri in ["https://app.example/cb\x00", "https://app.example/c b", "https://app.example/é",
                "https://app.example/cb\r\nX: y", "https://app.example/" + "a" * 2000,
                "http://app.example/cb", "https://app.example/cb#frag", "javascript:alert(1)"]:
        r = await client.post(f"/v1/plans/{plan.plan_id}/integrations", headers=plan.admin.auth,
                              json={"name": "x", "redirect_uris": [uri], "scopes": ["profile"]})
        assert r.status_code == 422, uri
        assert uri not in r.text  # never echoed
    r = await client.post(f"/v1/plans/{plan.plan_id}/integrations", headers=plan.admin.auth,
                          json={"name": "x", "redirect_uris": ["https://app.example/c%20b"],
                                "scopes": ["profile"]})
    assert r.status_code == 201


async def test_twenty_exception_requests_at_once_leave_one_open(client, plan, operator) -> None:  # noqa: ANN001
    custom = await register_custom(client, plan)
    await client.put(f"/v1/integrations/{custom.id}/judgement", headers=operator,
                     json={"deactivate_at": "2026-03-01T00:00:00Z"})
    path = f"/v1/plans/{plan.plan_id}/integrations/{custom.id}/exception-requests"
    answers = await asyncio.gather(*(client.post(path, headers=plan.admin.auth,
                                                 json={"message": f"please {i}"})
                                     for i in range(20)))
    codes = [a.status_code for a in answers]
    assert codes.count(201) == 1 and set(codes) <= {201, 409, 503}, codes
    queue = (await client.get("/v1/exception-requests", headers=operator)).json()
    assert len([q for q in queue if q["integration_id"] == str(custom.id)]) == 1
