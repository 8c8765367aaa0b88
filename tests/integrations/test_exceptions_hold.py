"""Rule 6 and 7: a running limited-data exception holds through deactivation.

- An integration subject to review (third-party, or custom judged third-party-operated), past
  its review deadline but holding an exception whose date has not passed, may be reactivated by
  a plan admin after a deactivation, and its tokens work again; once the exception's date has
  passed, reactivation is refused (409 `reactivation_deadline_passed`). The `actions` of the
  plan's integration list offer `reactivate` exactly when it is allowed.
- The worker's scheduled deactivation of a judged custom integration waits while an exception
  runs or its review is approved, and runs once the exception has ended.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest

from tests.conftest import PlanFixture
from tests.integrations.test_review_api import STEPS, install, machine_token, review
from tests.notifications.support import cycle, make_worker
from tests.oauth2.conftest import Registered, register_custom, register_third_party

pytestmark = pytest.mark.asyncio


async def view_of(client: httpx2.AsyncClient, plan: PlanFixture,
                  reg: Registered) -> dict[str, Any]:
    """The integration as `GET /v1/plans/{p}/integrations` shows it to the plan admin."""
    r = await client.get(f"/v1/plans/{plan.plan_id}/integrations", headers=plan.admin.auth)
    assert r.status_code == 200, r.text
    [view] = [v for v in r.json() if v["client_id"] == reg.client_id]
    return view


async def gateway(client: httpx2.AsyncClient, token: str) -> httpx2.Response:
    return await client.get("/v1/gateway/check", headers={"Authorization": f"Bearer {token}"})


async def grant_exception(client: httpx2.AsyncClient, operator: dict[str, str],
                          reg: Registered, until: datetime) -> None:
    r = await client.put(f"/v1/integrations/{reg.id}/exception",
                         json={"until": until.isoformat()}, headers=operator)
    assert r.status_code == 200, r.text
    assert r.json()["exception_until"] is not None


async def judge(client: httpx2.AsyncClient, operator: dict[str, str], reg: Registered, *,
                deactivate_at: datetime, review_deadline: datetime) -> None:
    r = await client.put(f"/v1/integrations/{reg.id}/judgement",
                         json={"deactivate_at": deactivate_at.isoformat(),
                               "review_deadline": review_deadline.isoformat()},
                         headers=operator)
    assert r.status_code == 200 and r.json()["judged_third_party"] is True, r.text


@pytest.mark.parametrize("kind", ["third_party", "judged"])
async def test_a_running_exception_allows_reactivation_until_its_date(
        app, client, operator, plan, clock, kind) -> None:
    if kind == "third_party":
        reg = await register_third_party(client, operator)  # limited data access
        await install(app, plan, reg)
        clock.advance(days=31)  # past its 30-day review deadline
    else:
        reg = await register_custom(client, plan)
        judge_at = clock.now()
        await judge(client, operator, reg, deactivate_at=judge_at + timedelta(days=60),
                    review_deadline=judge_at + timedelta(days=7))
        clock.advance(days=8)
    until = clock.now() + timedelta(days=10)
    await grant_exception(client, operator, reg, until)
    token = await machine_token(client, reg)
    assert (await gateway(client, token)).status_code == 200
    base = f"/v1/plans/{plan.plan_id}/integrations/{reg.id}"
    assert "reactivate" not in (await view_of(client, plan, reg))["actions"]  # active

    r = await client.post(f"{base}/deactivate", headers=plan.admin.auth)
    assert r.status_code == 200 and r.json()["state"] == "deactivated", r.text
    assert (await gateway(client, token)).status_code == 403
    assert "reactivate" in (await view_of(client, plan, reg))["actions"]

    r = await client.post(f"{base}/reactivate", headers=plan.admin.auth)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "active"
    assert (await gateway(client, token)).status_code == 200  # its machine token works again
    assert (await gateway(client, await machine_token(client, reg))).status_code == 200

    # Deactivated again while the exception runs; then its date passes.
    assert (await client.post(f"{base}/deactivate", headers=plan.admin.auth)).status_code == 200
    clock.set(until)
    assert "reactivate" not in (await view_of(client, plan, reg))["actions"]
    r = await client.post(f"{base}/reactivate", headers=plan.admin.auth)
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "reactivation_deadline_passed"
    assert (await view_of(client, plan, reg))["state"] == "deactivated"


async def test_reactivation_is_refused_past_the_deadline_without_an_exception(
        app, client, operator, plan, clock) -> None:
    """The other side of the exception: without one, the deadline ends reactivation, and the
    list offers nothing it would refuse."""
    reg = await register_third_party(client, operator)
    await install(app, plan, reg)
    base = f"/v1/plans/{plan.plan_id}/integrations/{reg.id}"
    assert (await client.post(f"{base}/deactivate", headers=plan.admin.auth)).status_code == 200
    assert "reactivate" in (await view_of(client, plan, reg))["actions"]
    clock.advance(days=31)
    assert "reactivate" not in (await view_of(client, plan, reg))["actions"]
    r = await client.post(f"{base}/reactivate", headers=plan.admin.auth)
    assert r.status_code == 409 and r.json()["error"] == "reactivation_deadline_passed"
    # An exception granted now makes it possible again, and the list says so.
    await grant_exception(client, operator, reg, clock.now() + timedelta(days=5))
    assert "reactivate" in (await view_of(client, plan, reg))["actions"]
    r = await client.post(f"{base}/reactivate", headers=plan.admin.auth)
    assert r.status_code == 200 and r.json()["state"] == "active", r.text


async def integration_token(client: httpx2.AsyncClient, plan: PlanFixture,
                            reg: Registered) -> str:
    """A token an admin generates for a custom integration: no lifetime of its own."""
    r = await client.post(f"/v1/plans/{plan.plan_id}/integrations/{reg.id}/tokens", json={},
                          headers=plan.admin.auth)
    assert r.status_code == 201, r.text
    return r.json()["token"]


async def test_a_scheduled_deactivation_waits_while_an_exception_runs(
        client, operator, plan, clock, database) -> None:
    reg = await register_custom(client, plan)
    token = await integration_token(client, plan, reg)
    start = clock.now()
    deactivate_at = start + timedelta(days=14)
    await judge(client, operator, reg, deactivate_at=deactivate_at,
                review_deadline=start + timedelta(days=7))
    until = start + timedelta(days=30)
    await grant_exception(client, operator, reg, until)
    worker = make_worker(database, clock, None)

    clock.set(deactivate_at + timedelta(days=1))  # due, past the deadline, the exception runs
    await cycle(worker)
    assert (await view_of(client, plan, reg))["state"] == "active"
    assert (await gateway(client, token)).status_code == 200

    clock.set(until)  # the exception has ended: the deactivation runs on the next cycle
    await cycle(worker)
    view = await view_of(client, plan, reg)
    assert (view["state"], view["deactivated_at"] is not None) == ("deactivated", True)
    assert "judged this integration to be operated by a third party" in \
        view["deactivation_reason"]
    r = await gateway(client, token)
    assert r.status_code == 403 and r.json()["rule"] == "installation_deactivated", r.text


async def test_a_scheduled_deactivation_spares_an_approved_integration(
        client, operator, plan, clock, database) -> None:
    reg = await register_custom(client, plan)
    token = await integration_token(client, plan, reg)
    start = clock.now()
    deactivate_at = start + timedelta(days=14)
    await judge(client, operator, reg, deactivate_at=deactivate_at,
                review_deadline=start + timedelta(days=7))
    r = await review(client, operator, reg, status="approved", steps=STEPS)
    assert r.status_code == 200 and r.json()["review_status"] == "approved", r.text
    worker = make_worker(database, clock, None)

    clock.set(deactivate_at + timedelta(days=1))
    await cycle(worker)
    assert (await view_of(client, plan, reg))["state"] == "active"
    assert (await gateway(client, token)).status_code == 200
    # Its approval withdrawn, it is neither approved nor excepted: the deactivation runs.
    assert (await review(client, operator, reg, status="in_review")).status_code == 200
    await cycle(worker)
    assert (await view_of(client, plan, reg))["state"] == "deactivated"
    assert (await gateway(client, token)).status_code == 403


async def test_an_exception_until_the_last_instant_there_is(client, operator, plan,
                                                          clock) -> None:  # noqa: ANN001
    """The latest instant the API takes is stored by PostgreSQL as `infinity`, which asyncpg
    reads back without a zone: it is still an aware UTC instant to every rule."""
    reg = await register_custom(client, plan)
    judge_at = clock.now()
    await judge(client, operator, reg, deactivate_at=judge_at + timedelta(days=60),
                review_deadline=judge_at + timedelta(days=7))
    clock.advance(days=8)
    await grant_exception(client, operator, reg, datetime.max.replace(tzinfo=UTC))
    token = await machine_token(client, reg)  # client credentials: judged by rule 6
    assert (await gateway(client, token)).status_code == 200
    assert (await view_of(client, plan, reg))["exception_until"].startswith("9999-12-31T23:59:59")
