"""The text of a notice, and how SMTP errors are judged: pure functions, no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import aiosmtplib
import pytest

from app.notifications.mailer import PermanentFailure, TransientFailure, build, classify
from app.notifications.messages import NoticeFacts, NoticeKind, compose, iso, period_key
from app.notifications.outbox import backoff
from app.plans.expiry import Period, Unit

ISSUED = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
PLAN = uuid.UUID("00000000-0000-4000-8000-000000000001")
INTEG = uuid.UUID("00000000-0000-4000-8000-000000000002")


def facts(**over: object) -> NoticeFacts:
    base = dict(kind=NoticeKind.expiring, token_id=uuid.uuid4(), token_kind="personal",
                token_name="ci deploy", token_hint="x9Zq", plan_id=PLAN, issued_at=ISSUED,
                expires_at=ISSUED + timedelta(days=90), period=Period(90, Unit.days),
                recipient_name="Ada")
    return NoticeFacts(**{**base, **over})


def test_expiring_personal_notice_says_what_when_why_and_how() -> None:
    email = compose(facts(), to="ada@example.com", base_url="https://auth.example.com/")
    assert email.to == "ada@example.com"
    assert email.subject == "Your Tessera token ending in x9Zq expires at 2026-04-15T12:00:00Z"
    assert 'personal API token "ci deploy", ending in x9Zq, expires at 2026-04-15T12:00:00Z' \
        in email.body
    assert ("Why: the plan's expiration period of 90 days counted from the token's generation "
            "on 2026-01-15T12:00:00Z.") in email.body
    assert "POST https://auth.example.com/v1/me/tokens" in email.body
    assert "cannot be extended" in email.body
    assert email.body.startswith("Hello Ada,")


def test_expired_integration_notice_points_at_the_integration_tokens_endpoint() -> None:
    email = compose(facts(kind=NoticeKind.expired, token_kind="integration",
                          integration_id=INTEG, integration_name="Billing sync"),
                    to="admin@example.com", base_url="http://tessera.test")
    assert email.subject == "Your Tessera token ending in x9Zq has expired"
    assert ('integration token "ci deploy" of the integration "Billing sync", ending in x9Zq, '
            "expired at 2026-04-15T12:00:00Z") in email.body
    assert f"POST http://tessera.test/v1/plans/{PLAN}/integrations/{INTEG}/tokens" in email.body
    assert "you generated this integration token" in email.body


def test_calendar_period_and_intrinsic_lifetime_reasons() -> None:
    # Jan 31 + 1 month is the end of Feb 28 (rule 1), and the notice names the period.
    jan31 = datetime(2026, 1, 31, 8, 30, 15, 250_000, tzinfo=UTC)
    monthly = compose(facts(issued_at=jan31, expires_at=datetime(2026, 2, 28, 23, 59, 59,
                                                                 999_999, tzinfo=UTC),
                            period=Period(1, Unit.months)), to="a@x", base_url="http://t")
    assert "expires at 2026-02-28T23:59:59.999999Z" in monthly.body
    assert "period of 1 month counted from the token's generation on 2026-01-31T08:30:15.250000Z" \
        in monthly.body
    # An intrinsic lifetime earlier than the period's expiry decided it.
    own = compose(facts(expires_at=ISSUED + timedelta(days=30)), to="a@x", base_url="http://t")
    assert "the token's own lifetime, fixed when it was generated on 2026-01-15T12:00:00Z" \
        in own.body
    unnamed = compose(facts(token_name=None, recipient_name=None), to="a@x", base_url="http://t")
    assert "(unnamed), ending in x9Zq" in unnamed.body and unnamed.body.startswith("Hello,")


@pytest.mark.parametrize(("value", "unit", "key"), [
    (7, Unit.days, "7 days"), (168, Unit.hours, "7 days"), (10080, Unit.minutes, "7 days"),
    (90, Unit.minutes, "90 minutes"), (120, Unit.minutes, "2 hours"), (1, Unit.days, "1 day"),
    (24, Unit.months, "2 years"), (13, Unit.months, "13 months"), (1, Unit.years, "1 year"),
])
def test_period_key_names_equal_durations_alike(value: int, unit: Unit, key: str) -> None:
    assert period_key(Period(value, unit)) == key
    assert period_key(None) == "none"


def test_iso_is_exact_utc() -> None:
    assert iso(datetime(2026, 4, 15, 12, 0, tzinfo=UTC)) == "2026-04-15T12:00:00Z"


def test_smtp_errors_are_judged_permanent_only_for_5xx_about_the_message() -> None:
    refused = aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(550, "5.1.1 mailbox unavailable", "a@x")])
    assert isinstance(classify(refused), PermanentFailure)
    assert "550 5.1.1 mailbox unavailable" in classify(refused).reason
    greylisted = aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(450, "4.2.0 greylisted", "a@x")])
    assert isinstance(classify(greylisted), TransientFailure)
    assert isinstance(classify(aiosmtplib.SMTPDataError(554, "5.7.1 spam")), PermanentFailure)
    assert isinstance(classify(aiosmtplib.SMTPDataError(451, "4.3.0 later")), TransientFailure)
    # Our configuration, not this message: retried once it is fixed, never dropped.
    assert isinstance(classify(aiosmtplib.SMTPAuthenticationError(535, "bad login")),
                      TransientFailure)
    assert isinstance(classify(aiosmtplib.SMTPSenderRefused(550, "no relay", "t@x")),
                      TransientFailure)
    assert isinstance(classify(aiosmtplib.SMTPConnectError("refused")), TransientFailure)
    assert isinstance(classify(ConnectionResetError()), TransientFailure)


def test_backoff_doubles_up_to_six_hours() -> None:
    assert [backoff(n) for n in (1, 2, 3)] == [timedelta(minutes=m) for m in (1, 2, 4)]
    assert backoff(50) == timedelta(hours=6)


def test_message_headers() -> None:
    email = compose(facts(), to="ada@example.com", base_url="http://t")
    msg = build(email.__class__(email.to, email.subject, email.body, "abc"),
                "Tessera <noreply@tessera.test>")
    assert msg["Message-ID"] == "<abc@tessera.test>"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["To"] == "ada@example.com"


def test_a_notice_in_french_for_an_owner_who_chose_it() -> None:
    email = compose(facts(), to="ada@example.com", base_url="https://auth.example.com/",
                    language="fr")
    assert email.subject == ("Votre jeton Tessera se terminant par x9Zq expire le "
                             "2026-04-15T12:00:00Z")
    assert email.body.startswith("Bonjour Ada,")
    assert ("Pourquoi : la période d'expiration de l'offre, 90 jours, comptée depuis la "
            "génération du jeton le 2026-01-15T12:00:00Z.") in email.body
    assert "POST https://auth.example.com/v1/me/tokens" in email.body
    cut = compose(facts(kind=NoticeKind.expired, cut_short=True, period=Period(1, Unit.months),
                        period_set_at=ISSUED + timedelta(days=60)),
                  to="ada@example.com", base_url="https://auth.example.com", language="fr")
    assert "a expiré" in cut.subject and "fixée à 1 mois le" in cut.body
    # English is the default, and any language without a catalogue.
    assert compose(facts(), to="a@b", base_url="x", language="de").subject.startswith("Your")
