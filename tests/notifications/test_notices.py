"""Rule 5 end to end: a real database (both backends), a real SMTP server, an injected clock.

Every test shares its database with others, so each looks only at its own recipients.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from app.notifications.messages import iso
from app.tokens.rules import TokenKind
from tests.helpers import set_period
from tests.notifications.support import (
    add_integration,
    cycle,
    issue,
    make_worker,
    outbox_rows,
    token_row,
)

pytestmark = pytest.mark.asyncio


async def test_seven_day_and_expired_notices(client, plan, clock, database, smtp) -> None:
    user = await plan.add_user(token=False)
    token = await issue(database, plan, user_id=user.user_id, name="ci deploy")
    issued_at = clock.now()
    assert (await set_period(client, plan, 90, "days")).status_code == 200
    worker = make_worker(database, clock, smtp)
    expiry = issued_at + timedelta(days=90)

    await cycle(worker)
    clock.set(expiry - timedelta(days=7, seconds=1))
    await cycle(worker)
    assert smtp.to(user.email) == []  # not yet inside the 7 days

    clock.set(expiry - timedelta(days=7))
    await cycle(worker)
    [notice] = smtp.to(user.email)
    assert notice.subject == f"Your Tessera token ending in {token.hint} expires at {iso(expiry)}"
    assert f'personal API token "ci deploy", ending in {token.hint}, expires at ' \
           f"{iso(expiry)} (UTC)" in notice.body
    assert ("the plan's expiration period of 90 days counted from the token's generation on "
            f"{iso(issued_at)}") in notice.body
    assert "POST https://tessera.test/v1/me/tokens" in notice.body
    assert notice.message["From"] == "Tessera <noreply@tessera.test>"

    clock.advance(days=3)
    await cycle(worker)
    assert len(smtp.to(user.email)) == 1  # once, however many cycles

    clock.set(expiry)
    await cycle(worker)
    first, expired = smtp.to(user.email)
    assert expired.subject == f"Your Tessera token ending in {token.hint} has expired"
    assert f"expired at {iso(expiry)} (UTC)" in expired.body
    assert "POST https://tessera.test/v1/me/tokens" in expired.body
    assert (await token_row(database, token.id)).expired_at == expiry  # marked by the worker

    clock.advance(days=30)
    await cycle(worker)
    assert len(smtp.to(user.email)) == 2
    rows = await outbox_rows(database, token.id)
    assert [(r.kind, r.status, r.expires_at) for r in rows] == [
        ("expiring", "sent", expiry), ("expired", "sent", expiry)]
    assert first.message["Message-ID"] == f"<{rows[0].id}@tessera.test>"


async def test_expired_stays_expired_and_marked(client, plan, clock, database, smtp) -> None:
    """Rule 4: removing the period after a token expired does not bring it back; its mark
    stays, and it is never noticed again. A token generated since lives by the new rules."""
    user = await plan.add_user()
    await set_period(client, plan, 1, "days")
    clock.advance(days=2)
    worker = make_worker(database, clock, smtp)
    await cycle(worker)
    assert [r.subject.endswith("has expired") for r in smtp.to(user.email)] == [True]
    assert (await client.get("/v1/me", headers=user.auth)).status_code == 401

    await plan.admin.renew(client)
    assert (await client.delete(f"/v1/plans/{plan.plan_id}/token-expiration",
                                headers=plan.admin.auth)).status_code == 204
    assert (await client.get("/v1/me", headers=user.auth)).status_code == 401
    await cycle(worker)
    r = await client.get(f"/v1/plans/{plan.plan_id}/tokens",
                         params={"user_id": str(user.user_id)}, headers=plan.admin.auth)
    [mine] = r.json()["items"]
    assert mine["status"] == "expired"
    assert (await token_row(database, uuid.UUID(mine["id"]))).expired_at is not None

    # A new, longer period: the dead token gets no new notice; a fresh one does.
    await user.renew(client)
    await set_period(client, plan, 5, "days")
    clock.advance(days=3)
    await cycle(worker)
    subjects = [r.subject for r in smtp.to(user.email)]
    assert len(subjects) == 2 and "expires at" in subjects[1]
    assert (await client.get("/v1/me", headers=user.auth)).status_code == 200


async def test_policy_change_is_noticed_within_one_cycle(client, plan, clock, database,
                                                         smtp) -> None:
    old, recent, fresh = [await plan.add_user(token=False) for _ in range(3)]
    await issue(database, plan, user_id=old.user_id)
    clock.advance(days=10)
    t_recent = await issue(database, plan, user_id=recent.user_id)
    clock.advance(days=85)
    await issue(database, plan, user_id=fresh.user_id)
    clock.advance(days=5)  # now: old issued 100 days ago, recent 90, fresh 5
    worker = make_worker(database, clock, smtp)
    await cycle(worker)
    assert not any(smtp.to(u.email) for u in (old, recent, fresh))  # no period, no expiry

    set_at = clock.now()
    assert (await set_period(client, plan, 95, "days")).status_code == 200
    await cycle(worker)  # one cycle
    [gone] = smtp.to(old.email)
    assert "has expired" in gone.subject
    # The period had run out for it when set: it died then, and the mail says so (rule 4).
    assert (f"expired at {iso(set_at)} (UTC) because the plan's period was set to 95 days on "
            f"{iso(set_at)}") in " ".join(gone.body.split())
    assert "does not bring it back" in gone.body
    [soon] = smtp.to(recent.email)
    assert f"expires at {iso(t_recent.issued_at + timedelta(days=95))}" in soon.subject
    assert smtp.to(fresh.email) == []

    # Shortened again within the window: the expiry moved, so one notice for the new value...
    await plan.admin.renew(client)  # the admin's own token expired under the period too
    assert (await set_period(client, plan, 93, "days")).status_code == 200
    await cycle(worker)
    assert len(smtp.to(old.email)) == 1  # already expired and told: nothing new
    first, second = smtp.to(recent.email)
    assert f"expires at {iso(t_recent.issued_at + timedelta(days=93))}" in second.subject
    # ...and the same period expressed in hours is the same expiry: nothing new.
    assert (await set_period(client, plan, 93 * 24, "hours")).status_code == 200
    await cycle(worker)
    assert len(smtp.to(recent.email)) == 2


async def test_integration_token_notice_goes_to_the_admin_who_generated_it(
        client, plan, clock, database, smtp) -> None:
    integ = await add_integration(database, plan, name="Billing sync")
    token = await issue(database, plan, kind=TokenKind.integration, integration_id=integ.id,
                        created_by=plan.admin.user_id, name="nightly export")
    await set_period(client, plan, 30, "days")
    clock.advance(days=23)
    await cycle(make_worker(database, clock, smtp))
    # The admin's own personal token is due too: one mail, a digest of both notices.
    [notice] = smtp.to(plan.admin.email)
    assert notice.subject == "2 of your Tessera tokens expire soon"
    assert f"ending in {token.hint} expires at" in notice.body
    assert ('integration token "nightly export" of the integration "Billing sync", ending in '
            f"{token.hint}") in " ".join(notice.body.split())
    assert f"POST https://tessera.test/v1/plans/{plan.plan_id}/integrations/{integ.id}/tokens" \
        in notice.body


async def test_revoked_oauth_and_never_expiring_tokens_get_no_notice(client, plan, clock,
                                                                     database, smtp) -> None:
    user = await plan.add_user(token=False)
    revoked = await issue(database, plan, user_id=user.user_id, name="revoked")
    r = await client.delete(f"/v1/plans/{plan.plan_id}/tokens/{revoked.id}",
                            headers=plan.admin.auth)
    assert r.status_code == 204
    access = await issue(database, plan, user_id=user.user_id, kind=TokenKind.access, name=None,
                         expires_at=clock.now() + timedelta(hours=1))
    refresh = await issue(database, plan, user_id=user.user_id, kind=TokenKind.refresh,
                          name=None)
    worker = make_worker(database, clock, smtp)
    clock.advance(days=400)
    await cycle(worker)  # no period: nothing expires by policy
    await set_period(client, plan, 1, "days")
    await cycle(worker)
    assert smtp.to(user.email) == []
    for t in (revoked, access, refresh):
        assert await outbox_rows(database, t.id) == []


async def test_intrinsic_lifetime_is_swept_by_expires_at(plan, clock, database, smtp) -> None:
    """Personal tokens carry no intrinsic expiry today; should one, it is noticed all the same."""
    user = await plan.add_user(token=False)
    token = await issue(database, plan, user_id=user.user_id,
                        expires_at=clock.now() + timedelta(days=10))
    worker = make_worker(database, clock, smtp)
    clock.advance(days=3)
    await cycle(worker)
    [soon] = smtp.to(user.email)
    assert "the token's own lifetime" in soon.body
    clock.advance(days=7)
    await cycle(worker)
    assert [r.kind for r in await outbox_rows(database, token.id)] == ["expiring", "expired"]
    assert (await token_row(database, token.id)).expired_at == token.expires_at


async def test_a_token_revoked_before_its_notice_went_out_is_not_mailed(
        client, plan, clock, database, smtp) -> None:
    user = await plan.add_user(token=False)
    token = await issue(database, plan, user_id=user.user_id)
    await set_period(client, plan, 8, "days")
    clock.advance(days=1, seconds=1)
    worker = make_worker(database, clock, smtp)
    smtp.mode = "outage"
    await cycle(worker)
    await client.delete(f"/v1/plans/{plan.plan_id}/tokens/{token.id}", headers=plan.admin.auth)
    smtp.mode = "accept"
    clock.advance(hours=1)
    await cycle(worker)
    assert smtp.to(user.email) == []
    [row] = await outbox_rows(database, token.id)
    assert (row.status, row.last_error) == ("skipped", "the token was revoked")


async def test_a_first_run_does_not_mail_about_tokens_dead_for_long(
        client, plan, clock, database, smtp) -> None:
    """Expired long before any worker saw it, under a period unchanged since: marked, not
    mailed (its owner learnt it long ago). Expired by a recent period change: mailed."""
    user = await plan.add_user(token=False)
    token = await issue(database, plan, user_id=user.user_id)
    await set_period(client, plan, 10, "days")
    clock.advance(days=200)
    await cycle(make_worker(database, clock, smtp))
    assert smtp.to(user.email) == []
    assert (await token_row(database, token.id)).expired_at is not None


async def test_notices_wait_without_smtp_then_go_out_once_as_one_digest(client, plan, clock,
                                                                        database,
                                                                        smtp) -> None:
    """No SMTP host: the notices wait in the outbox, and go out once one is set. A recipient
    with many tokens due gets one mail per cycle listing them all (a digest), and each token's
    notice is still settled exactly once."""
    owner = await plan.add_user(token=False)
    tokens = [await issue(database, plan, user_id=owner.user_id, name=f"job {i}")
              for i in range(25)]
    await set_period(client, plan, 10, "days")
    clock.advance(days=5)
    without = make_worker(database, clock, None)
    report = await cycle(without)
    assert report.jobs["notices.deliver"].stats["waiting"] >= 25
    assert smtp.to(owner.email) == []
    assert {r.status for t in tokens for r in await outbox_rows(database, t.id)} == {"pending"}

    with_smtp = make_worker(database, clock, smtp)
    await cycle(with_smtp)
    [mail] = smtp.to(owner.email)
    assert mail.subject == "25 of your Tessera tokens expire soon"
    for token in tokens:
        assert f"ending in {token.hint} expires at" in mail.body
    assert mail.message["Message-ID"]
    assert {r.status for t in tokens for r in await outbox_rows(database, t.id)} == {"sent"}
    await cycle(with_smtp)
    assert len(smtp.to(owner.email)) == 1  # exactly once
