"""Pruning settled notices (`outbox.prune`, the worker's `notices.prune` job): old messages do
not stay in the outbox for ever, and rule 5 (one notice per token per expiry) still holds."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from pydantic import ValidationError

from app.config import Settings
from app.notifications import outbox
from app.tokens.rules import TokenKind
from tests.helpers import set_period
from tests.notifications.support import add_owners, cycle, issue, make_worker, outbox_rows

pytestmark = pytest.mark.asyncio


def contents(rows) -> list[tuple[str, str, bool]]:  # noqa: ANN001
    """(kind, status, still holds its message) per row."""
    return [(r.kind, r.status, bool(r.body and r.subject and r.recipient)) for r in rows]


async def test_old_notices_lose_their_message_and_keep_their_key(client, plan, clock, database,
                                                                 smtp) -> None:
    user = await plan.add_user(token=False)
    token = await issue(database, plan, user_id=user.user_id)
    expiry = clock.now() + timedelta(days=90)
    assert (await set_period(client, plan, 90, "days")).status_code == 200
    worker = make_worker(database, clock, smtp, outbox_retention_days=60)

    clock.set(expiry - timedelta(days=7))
    await cycle(worker)
    clock.set(expiry)
    await cycle(worker)
    assert contents(await outbox_rows(database, token.id)) == [
        ("expiring", "sent", True), ("expired", "sent", True)]

    # Kept 60 days after each was written: the "expiring" one 7 days before the expiry.
    clock.set(expiry - timedelta(days=7) + timedelta(days=60))
    await cycle(worker)
    assert contents(await outbox_rows(database, token.id)) == [
        ("expiring", "sent", True), ("expired", "sent", True)]
    clock.advance(seconds=1)
    report = await cycle(worker)
    assert report.jobs["notices.prune"].stats["stripped"] >= 1  # ours, and other tests' rows
    assert contents(await outbox_rows(database, token.id)) == [
        ("expiring", "sent", False), ("expired", "sent", True)]

    clock.set(expiry + timedelta(days=60, seconds=1))
    await cycle(worker)
    rows = await outbox_rows(database, token.id)
    assert contents(rows) == [("expiring", "sent", False), ("expired", "sent", False)]
    assert all((r.recipient, r.subject, r.body, r.last_error, r.claimed_by) ==
               (None, "", "", None, None) for r in rows)

    # The same expiry comes back (period removed, then set again): the kept key stops a
    # second "expired" notice, even though the change is recent enough to be noticed.
    await plan.admin.renew(client)  # the admin's own token expired by the same period
    assert (await client.delete(f"/v1/plans/{plan.plan_id}/token-expiration",
                                headers=plan.admin.auth)).status_code == 204
    await cycle(worker)
    assert (await set_period(client, plan, 90, "days")).status_code == 200
    for _ in range(3):
        await cycle(worker)
        clock.advance(days=1)
    assert len(smtp.to(user.email)) == 2
    assert len(await outbox_rows(database, token.id)) == 2


async def test_pending_notices_keep_their_message_however_old(client, plan, clock, database,
                                                              smtp) -> None:
    user = await plan.add_user(token=False)
    token = await issue(database, plan, user_id=user.user_id)
    expiry = clock.now() + timedelta(days=30)
    assert (await set_period(client, plan, 30, "days")).status_code == 200
    worker = make_worker(database, clock, smtp, outbox_retention_days=10)

    clock.set(expiry - timedelta(days=7))
    await cycle(worker)  # "expiring" sent
    smtp.mode = "outage"
    clock.set(expiry)
    await cycle(worker)  # "expired" written, not accepted: pending, retried later
    clock.set(expiry + timedelta(days=45))
    await cycle(worker)
    assert contents(await outbox_rows(database, token.id)) == [
        ("expiring", "sent", False), ("expired", "pending", True)]

    smtp.mode = "accept"
    clock.advance(days=1)  # past any backoff
    await cycle(worker)  # sent (late: it is still true), then stripped in the same cycle
    assert contents(await outbox_rows(database, token.id)) == [
        ("expiring", "sent", False), ("expired", "sent", False)]
    assert [m.subject.endswith("has expired") for m in smtp.to(user.email)] == [False, True]


async def test_notices_of_revoked_tokens_are_deleted(client, plan, clock, database,
                                                     smtp) -> None:
    """A revoked token is never notified again, so its key has nothing left to stop."""
    user = await plan.add_user()
    r = await client.post("/v1/me/tokens", json={"name": "old"}, headers=user.auth)
    assert r.status_code == 201, r.text
    token_id = uuid.UUID(r.json()["id"])
    expiry = clock.now() + timedelta(days=20)
    assert (await set_period(client, plan, 20, "days")).status_code == 200
    worker = make_worker(database, clock, smtp, outbox_retention_days=5)

    clock.set(expiry - timedelta(days=7))
    await cycle(worker)
    [row] = await outbox_rows(database, token_id)
    assert row.status == "sent"
    assert (await client.delete(f"/v1/plans/{plan.plan_id}/tokens/{token_id}",
                                headers=plan.admin.auth)).status_code == 204
    clock.set(expiry + timedelta(days=6))
    report = await cycle(worker)
    assert report.jobs["notices.prune"].stats["deleted"] >= 1
    assert await outbox_rows(database, token_id) == []


async def test_the_retention_is_at_least_a_day() -> None:
    assert Settings().outbox_retention_days == 90
    with pytest.raises(ValidationError):
        Settings(outbox_retention_days=0)


async def test_a_backlog_is_pruned_in_bounded_batches(plan, clock, database, smtp,
                                                     monkeypatch) -> None:
    owners = await add_owners(database, plan, 5)
    tokens = [await issue(database, plan, user_id=o.user_id, kind=TokenKind.personal,
                          expires_at=clock.now() + timedelta(days=3)) for o in owners]
    worker = make_worker(database, clock, smtp)
    await cycle(worker)  # five "expiring" notices, sent
    clock.advance(days=100)
    monkeypatch.setattr(outbox, "PRUNE_BATCHES", 2)
    first = await outbox.prune(worker.maker, now=clock.now(), retention=timedelta(days=90),
                               batch_size=2)
    assert sum(first.values()) == 4  # two batches of two, then this call stops
    while sum((await outbox.prune(worker.maker, now=clock.now(),
                                  retention=timedelta(days=90), batch_size=2)).values()):
        pass
    for token in tokens:
        assert [(r.kind, r.status, bool(r.body)) for r in await outbox_rows(database, token.id)] \
            == [("expiring", "sent", False)]
