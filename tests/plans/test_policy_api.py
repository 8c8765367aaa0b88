"""Rules 1-4 and 9 over HTTP: the plan's one expiration period."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.helpers import create_gateway_client, introspect, set_period

pytestmark = pytest.mark.asyncio


async def test_no_period_by_default_then_set_read_remove(client, plan) -> None:
    url = f"/v1/plans/{plan.plan_id}/token-expiration"
    r = await client.get(url, headers=plan.admin.auth)
    assert r.status_code == 200
    assert r.json()["period"] is None

    r = await set_period(client, plan, 90, "days")
    assert r.status_code == 200, r.text
    assert r.json()["period"] == {"value": 90, "unit": "days"}
    assert (await client.get(url, headers=plan.admin.auth)).json()["period"] == \
        {"value": 90, "unit": "days"}

    r = await client.delete(url, headers=plan.admin.auth)
    assert r.status_code == 204
    assert (await client.get(url, headers=plan.admin.auth)).json()["period"] is None


async def test_period_counts_from_original_generation_time(client, plan, clock) -> None:
    """Rule 2: a period set today expires a token generated 10 days ago at once."""
    creds = await create_gateway_client(client, plan)
    old = await plan.add_user()  # its token is generated now
    clock.advance(days=10)
    assert (await introspect(client, creds, old.token))["active"] is True

    assert (await set_period(client, plan, 7, "days")).status_code == 200
    assert (await introspect(client, creds, old.token)) == {"active": False}
    r = await client.get("/v1/me/tokens", headers=old.auth)
    assert r.status_code == 401
    # The admin's own token was generated 10 days ago too: it is gone, and a new one is had
    # with the admin's password.
    assert (await client.get("/v1/me", headers=plan.admin.auth)).status_code == 401
    await plan.admin.renew(client)

    # Lengthening the period does not bring it back: expiry is final (rule 4). The new
    # admin token, generated since, lives by the new period.
    assert (await set_period(client, plan, 30, "days")).status_code == 200
    assert (await introspect(client, creds, old.token)) == {"active": False}
    answer = await introspect(client, creds, plan.admin.token)
    assert answer["active"] is True and answer["exp"] - answer["iat"] == 30 * 86400


async def test_removing_the_period_spares_only_what_has_not_expired(client, plan,
                                                                    clock) -> None:
    """Rule 4: removing the period leaves tokens without an intrinsic expiry valid until
    revoked, but only those it had not expired yet; expired ones stay expired for good."""
    creds = await create_gateway_client(client, plan)
    dead = await plan.add_user()
    await set_period(client, plan, 1, "hours")
    clock.advance(hours=2)
    await plan.admin.renew(client)
    alive = await plan.add_user()  # generated under the period, not expired by it
    r = await client.delete(f"/v1/plans/{plan.plan_id}/token-expiration",
                            headers=plan.admin.auth)
    assert r.status_code == 204
    spared = await introspect(client, creds, alive.token)
    assert spared["active"] is True and "exp" not in spared
    assert await introspect(client, creds, dead.token) == {"active": False}
    clock.advance(days=400)
    assert (await introspect(client, creds, alive.token))["active"] is True
    assert await introspect(client, creds, dead.token) == {"active": False}
    policy = (await client.get(f"/v1/plans/{plan.plan_id}/token-expiration",
                               headers=plan.admin.auth)).json()
    assert policy["period"] is None and policy["expired_through"] is not None


async def test_months_are_calendar_months(client, plan, clock) -> None:
    creds = await create_gateway_client(client, plan)
    clock.set(clock.now().replace(month=1, day=31, hour=9, minute=0))
    user = await plan.add_user()
    await set_period(client, plan, 1, "months")
    answer = await introspect(client, creds, user.token)
    # February has no 31st: the end of its last day.
    expected = clock.now().replace(month=2, day=28, hour=23, minute=59, second=59,
                                   microsecond=999_999)
    assert answer["exp"] == int(expected.timestamp())
    clock.set(expected - timedelta(seconds=1))
    assert (await introspect(client, creds, user.token))["active"] is True
    clock.set(expected)
    assert await introspect(client, creds, user.token) == {"active": False}


async def test_preview_counts_buckets(client, plan, clock) -> None:
    await plan.add_user()  # generated at T0, like the admin's token
    clock.advance(days=3)
    await plan.add_user()  # T0 + 3 d
    clock.advance(days=27)
    await plan.add_user()  # T0 + 30 d = now
    r = await client.post(f"/v1/plans/{plan.plan_id}/token-expiration/preview",
                          json={"value": 30, "unit": "days"}, headers=plan.admin.auth)
    assert r.status_code == 200, r.text
    body = r.json()
    # Generated at T0 (the admin's and the first): 30 days is now. T0 + 3 d: in 3 days.
    assert body["expire_immediately"] == 2
    assert body["expire_within_7_days"] == 1
    assert body["expire_later"] == 1
    assert body["never_expire"] == 0
    # Nothing changed: a preview is only a preview.
    r = await client.get(f"/v1/plans/{plan.plan_id}/token-expiration", headers=plan.admin.auth)
    assert r.json()["period"] is None


async def test_only_admins_of_the_plan_manage_it(client, plan, other_plan) -> None:
    member = await plan.add_user("member")
    url = f"/v1/plans/{plan.plan_id}/token-expiration"
    body = {"value": 1, "unit": "days"}
    r = await client.put(url, json=body, headers=member.auth)
    assert r.status_code == 403 and r.json()["error"] == "admin_required"
    r = await client.put(url, json=body, headers=other_plan.admin.auth)
    missing = await client.put(url.replace(str(plan.plan_id),
                                           "00000000-0000-4000-8000-000000000000"),
                               json=body, headers=other_plan.admin.auth)
    assert r.status_code == missing.status_code == 404
    assert r.json() == missing.json()
    for path in ("tokens", "users"):
        r = await client.get(f"/v1/plans/{plan.plan_id}/{path}", headers=other_plan.admin.auth)
        assert r.status_code == 404
    r = await client.get(url, headers=plan.admin.auth)
    assert r.json()["period"] is None


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"value": 1, "unit": "weeks"}, 422, "invalid_request"),
        ({"value": 0, "unit": "days"}, 422, "invalid_period"),
        ({"value": -3, "unit": "days"}, 422, "invalid_period"),
        ({"value": 101, "unit": "years"}, 422, "invalid_period"),
        ({"value": 1201, "unit": "months"}, 422, "invalid_period"),
        ({"value": "90", "unit": "days"}, 422, "invalid_request"),
        ({"value": 1.5, "unit": "days"}, 422, "invalid_request"),
        ({"value": 90}, 422, "invalid_request"),
        ({"value": 90, "unit": "days", "role": "member"}, 422, "per_plan_only"),
        ({"value": 90, "unit": "days", "user_id": "x"}, 422, "per_plan_only"),
        ({"value": 90, "unit": "days", "token_id": "x"}, 422, "per_plan_only"),
        ([1, 2], 422, "invalid_request"),
    ],
)
async def test_bad_periods_are_refused_clearly(client, plan, body, status, code) -> None:
    r = await client.put(f"/v1/plans/{plan.plan_id}/token-expiration", json=body,
                         headers=plan.admin.auth)
    assert r.status_code == status, r.text
    assert r.json()["error"] == code
    assert r.json()["message"]
    r = await client.get(f"/v1/plans/{plan.plan_id}/token-expiration", headers=plan.admin.auth)
    assert r.json()["period"] is None  # nothing was changed by a refused request


async def test_policy_changes_are_audited_and_rewrite_no_token(client, plan, database) -> None:
    from sqlalchemy import select

    from app.audit.models import AuditEvent
    from app.db import make_sessionmaker
    from app.tokens.models import Token

    maker = make_sessionmaker(database.engine)
    async with maker() as s:
        before = (await s.execute(select(Token.issued_at, Token.expires_at)
                                  .where(Token.plan_id == plan.plan_id))).all()
    await set_period(client, plan, 2, "years")
    async with maker() as s:
        after = (await s.execute(select(Token.issued_at, Token.expires_at)
                                 .where(Token.plan_id == plan.plan_id))).all()
        events = (await s.execute(select(AuditEvent.action, AuditEvent.detail)
                                  .where(AuditEvent.plan_id == plan.plan_id))).all()
    assert before == after
    assert ("plan.period_set", {"period": "2 years"}) in [(a, d) for a, d in events]


async def test_the_period_in_force_set_again_changes_nothing(client, plan, clock,
                                                             database) -> None:
    """An idempotent PUT (a configuration tool re-applying its settings): the answer is the
    policy, and nothing is recorded: no spell kept in the plan's history (each one is read
    whenever a token's death is explained), no audit event, the same `updated_at`."""
    import asyncio

    from sqlalchemy import func, select

    from app.audit.models import AuditEvent
    from app.db import make_sessionmaker
    from app.plans.models import PastPeriod

    path = f"/v1/plans/{plan.plan_id}/token-expiration"
    first = await client.put(path, json={"value": 90, "unit": "days"}, headers=plan.admin.auth)
    assert first.status_code == 200, first.text

    async def counts() -> tuple[int, int]:
        async with make_sessionmaker(database.engine)() as s:
            spells = await s.scalar(select(func.count()).select_from(PastPeriod)
                                    .where(PastPeriod.plan_id == plan.plan_id))
            events = await s.scalar(select(func.count()).select_from(AuditEvent)
                                    .where(AuditEvent.plan_id == plan.plan_id))
            return spells, events

    before = await counts()
    for _ in range(5):
        clock.advance(minutes=1)
        again = await client.put(path, json={"value": 90, "unit": "days"},
                                 headers=plan.admin.auth)
        assert again.status_code == 200, again.text
        assert again.json() == first.json()
    assert await counts() == before
    changed = await client.put(path, json={"value": 30, "unit": "days"}, headers=plan.admin.auth)
    assert changed.status_code == 200 and changed.json()["period"]["value"] == 30
    spells, events = await counts()
    assert (spells, events) == (before[0] + 1, before[1] + 1)  # a real change: both kept
    twenty = await asyncio.gather(*(client.put(path, json={"value": 30, "unit": "days"},
                                               headers=plan.admin.auth) for _ in range(20)))
    assert {r.status_code for r in twenty} == {200}
    assert await counts() == (spells, events)


async def test_setting_the_period_again_reads_what_another_replica_committed(
        app, client, plan, database) -> None:  # noqa: ANN001
    """The PUT that finds the period in force changes nothing, and decides so from a read made
    after it came (batched with the concurrent ones on PostgreSQL), never from what this
    replica cached: a change committed elsewhere just before (here by hand, which nobody
    announces) is undone by twenty PUTs of the earlier period, once, and each answers the
    period it set."""
    import asyncio

    from sqlalchemy import func, select, update

    from app.audit.models import AuditEvent
    from app.db import make_sessionmaker
    from app.plans.models import Plan
    from tests.integrations.test_token_client_cache import serve_cache

    serve_cache(app)
    path = f"/v1/plans/{plan.plan_id}/token-expiration"
    first = await client.put(path, json={"value": 90, "unit": "days"}, headers=plan.admin.auth)
    assert first.status_code == 200, first.text
    read = await client.get(path, headers=plan.admin.auth)  # the caller's facts, cached
    assert read.json()["period"] == {"value": 90, "unit": "days"}
    async with make_sessionmaker(database.engine)() as s, s.begin():
        await s.execute(update(Plan).where(Plan.id == plan.plan_id)
                        .values(expiration_value=30, expiration_unit="days"))
        before = await s.scalar(select(func.count()).select_from(AuditEvent)
                                .where(AuditEvent.action == "plan.period_set"))
    twenty = await asyncio.gather(*(client.put(path, json={"value": 90, "unit": "days"},
                                               headers=plan.admin.auth) for _ in range(20)))
    assert [r.status_code for r in twenty] == [200] * 20, [r.text for r in twenty]
    assert {r.json()["period"]["value"] for r in twenty} == {90}
    async with make_sessionmaker(database.engine)() as s:
        stored = (await s.execute(select(Plan.expiration_value, Plan.expiration_unit)
                                  .where(Plan.id == plan.plan_id))).one()
        after = await s.scalar(select(func.count()).select_from(AuditEvent)
                               .where(AuditEvent.action == "plan.period_set"))
    assert tuple(stored) == (90, "days")
    assert after == before + 1  # one of the twenty changed it back; the others found it so
