"""`lifecycle.views_settled_until` against `lifecycle.views_of` itself: a plan's integrations
as of any instant before the one it names are shown as they are at the start, and at that
instant they differ (or it is the first deadline or exception date after the start)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from app.integrations.lifecycle import views_of, views_settled_until

START = datetime(2027, 1, 1, tzinfo=UTC)


def _row(rng: random.Random) -> SimpleNamespace:
    def instant() -> datetime | None:
        return None if rng.random() < 0.3 else START + timedelta(hours=rng.randint(-100, 100))

    return SimpleNamespace(
        id=uuid.uuid4(), client_id=f"tc_{rng.randrange(10**6)}", name=f"app {rng.randrange(9)}",
        kind=rng.choice(["custom", "third_party"]),
        data_access=rng.choice(["limited", "extended"]),
        review_status=rng.choice(["not_reviewed", "in_review", "approved", "revoked"]),
        review_deadline=instant(), review_steps={}, exception_until=instant(),
        deactivation_scheduled_at=None,
        judged_third_party_at=START if rng.random() < 0.3 else None,
        approved_scopes=["profile"], state=rng.choice(["active", "deactivated"]),
        deactivated_at=None, deactivation_reason=None, keep_confirmed_at=None)


def test_views_hold_until_the_instant_named_and_no_longer() -> None:
    rng = random.Random(7)
    for _ in range(500):
        found = [_row(rng) for _ in range(rng.randint(0, 5))]
        now = START + timedelta(hours=rng.randint(-120, 120), microseconds=rng.randrange(10**6))
        shown = views_of(found, now)
        until = views_settled_until(found, now)
        ends = sorted(at for r in found for at in (r.review_deadline, r.exception_until)
                      if at is not None and at > now)
        assert until == (ends[0] if ends else None)
        probes = [now, now + timedelta(microseconds=1)]
        if until is not None:
            probes += [until - timedelta(microseconds=1), now + (until - now) / 2]
        else:
            probes += [now + timedelta(days=3650)]
        for at in probes:
            assert views_of(found, at) == shown, (found, now, at)
