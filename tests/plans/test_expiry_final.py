"""Rule 4: expiry is final. A token is dead for good from the first instant it is expired under
the period then in force; lengthening or removing the period later spares only the living. Kept
in constant time per check (the plan's `expired_through`) and per change (no token row is
touched), and explained in words (`/status`, listings, the preview)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from app.plans.expiry import (
    Period,
    Spell,
    Unit,
    add_period,
    closing,
    death,
    is_expired,
    killed_by_earlier_periods,
)
from tests.helpers import create_gateway_client, introspect, set_period

T0 = datetime(2026, 1, 1, tzinfo=UTC)

periods = st.one_of(
    st.none(),
    st.builds(Period, st.integers(1, 90), st.sampled_from([Unit.minutes, Unit.hours, Unit.days])),
    st.builds(Period, st.integers(1, 14), st.sampled_from([Unit.months, Unit.years])),
)
# Gaps between changes, and offsets, in minutes: up to about three years.
gaps = st.integers(0, 3 * 365 * 24 * 60)


def dead_by_definition(issued_at: datetime, changes: list[tuple[datetime, Period | None]],
                       now: datetime) -> bool:
    """The definition, with no cut-off and no inversion: some period, over the span it was in
    force (up to the next change, or now), ran out for the token within that span."""
    for i, (_since, period) in enumerate(changes):
        until = changes[i + 1][0] if i + 1 < len(changes) else now
        if period is not None and issued_at < until and add_period(issued_at, period) <= until:
            return True
    return False


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(gaps, periods), min_size=1, max_size=6), gaps, gaps)
def test_the_constant_time_check_agrees_with_the_definition(steps, issued_offset,
                                                            checked_after) -> None:
    """However the period changed over time, the check (one comparison with the plan's
    `expired_through`, and the period in force) says exactly what the definition says, and
    `death` names a death exactly then, at an instant within the token's life."""
    changes, at = [], T0
    for gap, period in steps:
        at += timedelta(minutes=gap)
        changes.append((at, period))
    issued_at = T0 + timedelta(minutes=issued_offset)
    now = max(at, issued_at) + timedelta(minutes=checked_after)

    # The bookkeeping the service does at each change (`plans.service._close_period`).
    expired_through, spells = None, []
    for (since, period), (until, _next) in zip(changes, changes[1:], strict=False):
        expired_through, ended = closing(period, since, expired_through, until)
        spells += [ended] if ended else []
    current_since, current = changes[-1]
    if current is not None:
        spells.append(Spell(current, current_since))

    by_check = killed_by_earlier_periods(issued_at, expired_through) or (
        current is not None and is_expired(add_period(issued_at, current), now))
    assert by_check == dead_by_definition(issued_at, changes, now)
    died = death(issued_at, None, spells, now)
    assert (died is not None) == by_check
    if died is not None:
        assert issued_at < died.at <= now
        assert died.spell is not None and add_period(issued_at, died.spell.period) <= died.at


def test_death_under_a_period_set_after_it_ran_out_is_cut_short() -> None:
    issued = T0
    set_at = T0 + timedelta(days=10)
    died = death(issued, None, [Spell(Period(7, Unit.days), set_at)], set_at + timedelta(days=1))
    assert died is not None and died.at == set_at and died.cut_short
    died = death(issued, None, [Spell(Period(30, Unit.days), set_at)], T0 + timedelta(days=31))
    assert died is not None and died.at == T0 + timedelta(days=30) and not died.cut_short
    # Its own lifetime ending first wins.
    died = death(issued, T0 + timedelta(days=2), [Spell(Period(7, Unit.days), set_at)],
                 set_at + timedelta(days=1))
    assert died is not None and died.at == T0 + timedelta(days=2) and died.spell is None




async def status_of(client, plan, member) -> dict:  # noqa: ANN001
    r = await client.get(f"/v1/plans/{plan.plan_id}/tokens",
                         params={"user_id": str(member.user_id)}, headers=plan.admin.auth)
    [listed] = r.json()["items"]
    r = await client.get(f"/v1/plans/{plan.plan_id}/tokens/{listed['id']}/status",
                         headers=plan.admin.auth)
    assert r.status_code == 200, r.text
    return {"listed": listed, **r.json()}


async def test_lengthening_or_removing_the_period_never_revives(client, plan, clock) -> None:
    creds = await create_gateway_client(client, plan)
    old = await plan.add_user()
    clock.advance(days=10)
    set_at = clock.now()
    assert (await set_period(client, plan, 7, "days")).status_code == 200
    await plan.admin.renew(client)  # the admin's own token died too
    clock.advance(hours=1)
    for change in ("lengthen", "remove"):
        if change == "lengthen":
            assert (await set_period(client, plan, 365, "days")).status_code == 200
        else:
            r = await client.delete(f"/v1/plans/{plan.plan_id}/token-expiration",
                                    headers=plan.admin.auth)
            assert r.status_code == 204
        assert await introspect(client, creds, old.token) == {"active": False}
        assert (await client.get("/v1/gateway/check", headers=old.auth)).status_code == 401
        status = await status_of(client, plan, old)
        assert status["status"] == "expired" and status["final"] is True
        # When and why, in words: the change that cut it short.
        assert status["explanation"] == (
            f"expired for good on {set_at.isoformat()} because the plan's period was set to "
            f"7 days on {set_at.isoformat()}: counted from its generation on "
            f"{(set_at - timedelta(days=10)).isoformat()}, that period had already run out")
        assert status["expired_since"] == status["listed"]["expires_at"] \
            == set_at.isoformat().replace("+00:00", "Z")
        assert status["period"] == "7 days"


async def test_a_token_that_ran_out_under_an_earlier_period_says_so(client, plan,
                                                                    clock) -> None:
    member = await plan.add_user()
    assert (await set_period(client, plan, 3, "days")).status_code == 200
    clock.advance(days=5)  # died at day 3, under the period in force since day 0
    await plan.admin.renew(client)
    assert (await set_period(client, plan, 30, "days")).status_code == 200
    status = await status_of(client, plan, member)
    died = (clock.now() - timedelta(days=2)).isoformat()
    assert status["explanation"].startswith(
        f"expired for good on {died} under the plan's expiration period of 3 days")
    assert status["final"] is True


async def test_a_period_change_rewrites_no_token_row(client, plan, database, clock) -> None:
    """Constant time per change: setting, lengthening and removing a period write the plan's
    row and one row of history, never a token row, however many tokens the plan has."""
    for _ in range(5):
        await plan.add_user()
    clock.advance(days=10)
    await set_period(client, plan, 7, "days")
    await plan.admin.renew(client)
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:  # noqa: ANN001
        statements.append(" ".join(statement.split()).upper())

    event.listen(database.engine.sync_engine, "before_cursor_execute", seen)
    try:
        assert (await set_period(client, plan, 30, "days")).status_code == 200
        r = await client.delete(f"/v1/plans/{plan.plan_id}/token-expiration",
                                headers=plan.admin.auth)
        assert r.status_code == 204
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", seen)
    writes = [s for s in statements if s.startswith(("UPDATE", "INSERT", "DELETE"))]
    assert writes, statements
    assert not [s for s in writes if s.startswith(("UPDATE TOKENS", "DELETE FROM TOKENS",
                                                    "INSERT INTO TOKENS"))], writes
    assert sum(s.startswith("INSERT INTO PLAN_PAST_PERIODS") for s in writes) == 2


async def test_the_preview_names_who_dies_for_good_and_when(client, plan, clock) -> None:
    old = await plan.add_user()
    clock.advance(days=20)
    mid = await plan.add_user()
    clock.advance(days=5)
    fresh = await plan.add_user()
    clock.advance(days=1)
    # old: 26 days, mid: 6 days, fresh: 1 day. The admin's own token is as old as `old`.
    r = await client.post(f"/v1/plans/{plan.plan_id}/token-expiration/preview",
                          json={"value": 10, "unit": "days"}, headers=plan.admin.auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["expire_immediately"], body["expire_within_7_days"], body["expire_later"]) \
        == (2, 1, 1)
    assert "final" in body["final"] and "for good" in body["final"]
    dying = {d["user_email"]: d for d in body["dying"]}
    assert set(dying) == {old.email, plan.admin.email, mid.email}
    now = clock.now()
    assert dying[old.email]["dies_at"] == now.isoformat().replace("+00:00", "Z")
    assert dying[mid.email]["dies_at"] == \
        (now + timedelta(days=4)).isoformat().replace("+00:00", "Z")
    assert body["dying_truncated"] is False and fresh.email not in dying

    # Once set, tokens it killed are no longer "live": a second preview does not count them
    # again, whatever it proposes.
    assert (await set_period(client, plan, 10, "days")).status_code == 200
    await plan.admin.renew(client)
    r = await client.post(f"/v1/plans/{plan.plan_id}/token-expiration/preview",
                          json={"value": 100, "unit": "years"}, headers=plan.admin.auth)
    body = r.json()
    assert body["expire_immediately"] == 0 and body["expire_later"] == 3  # mid, fresh, admin
    assert body["dying"] == []


async def test_around_a_months_end_nothing_revives_and_nothing_dies_early(client, plan,
                                                                           clock) -> None:
    """Calendar periods near a month's end: a token dead under "1 month" stays dead when the
    period is removed, and one still alive is not killed by a longer period, nor hidden from
    the preview."""
    creds = await create_gateway_client(client, plan)
    clock.set(datetime(2027, 1, 1, tzinfo=UTC))
    await plan.admin.renew(client)
    assert (await set_period(client, plan, 1, "months")).status_code == 200
    clock.set(datetime(2027, 1, 28, 0, 0, tzinfo=UTC))
    dead = await plan.add_user()  # dies at 2027-02-28T00:00Z
    clock.set(datetime(2027, 1, 30, 13, 0, tzinfo=UTC))
    alive = await plan.add_user()  # Feb 30 does not exist: dies at the end of Feb 28
    clock.set(datetime(2027, 2, 28, 12, 17, tzinfo=UTC))
    assert await introspect(client, creds, dead.token) == {"active": False}
    assert (await introspect(client, creds, alive.token))["active"] is True
    await plan.admin.renew(client)  # the admin's own token died on Feb 1
    r = await client.post(f"/v1/plans/{plan.plan_id}/token-expiration/preview",
                          json={"value": 1, "unit": "years"}, headers=plan.admin.auth)
    assert r.json()["expire_later"] >= 1  # `alive` is counted, as a survivor
    assert (await set_period(client, plan, 1, "years")).status_code == 200
    assert (await introspect(client, creds, alive.token))["active"] is True
    r = await client.delete(f"/v1/plans/{plan.plan_id}/token-expiration",
                            headers=plan.admin.auth)
    assert r.status_code == 204
    assert await introspect(client, creds, dead.token) == {"active": False}
    assert (await client.get("/v1/me", headers=dead.auth)).status_code == 401
    assert (await introspect(client, creds, alive.token))["active"] is True


async def test_concurrent_period_changes_lose_no_cut_off(client, plan, clock) -> None:
    """Twenty changes at once, alternating a period that kills the token and one that would
    spare it: each runs from the state the previous one left, so once a killing period was in
    force the token stays dead, whatever order they committed in (SQLite included, which
    ignores FOR UPDATE). Four rounds: a lost cut-off shows in some orders only."""
    creds = await create_gateway_client(client, plan)
    for _round in range(4):
        victim = await plan.add_user()
        await plan.admin.renew(client)
        assert (await set_period(client, plan, 1, "days")).status_code == 200
        clock.advance(hours=2)
        await plan.admin.renew(client)  # generated now: no period here kills it (clock stands)
        bodies = [{"value": 1, "unit": "minutes"} if i % 2 else {"value": 1, "unit": "years"}
                  for i in range(20)]
        answers = await asyncio.gather(*[
            client.put(f"/v1/plans/{plan.plan_id}/token-expiration", json=body,
                       headers=plan.admin.auth) for body in bodies])
        assert [r.status_code for r in answers] == [200] * 20
        assert await introspect(client, creds, victim.token) == {"active": False}
        assert (await set_period(client, plan, 100, "years")).status_code == 200
        assert await introspect(client, creds, victim.token) == {"active": False}
