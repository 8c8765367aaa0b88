"""A real SMTP server for the tests (aiosmtpd on 127.0.0.1), and helpers to run the worker.

The server records what it accepted and can be switched to answer like a server in trouble:
`outage` answers 451 to the message data (try again later), `reject` answers 550 to the
recipient (refused for good).
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from sqlalchemy import select

from app.clock import FrozenClock
from app.config import Settings
from app.db import make_sessionmaker, session_scope
from app.integrations.models import Installation, Integration
from app.notifications.models import OutboxMessage
from app.tokens import service as tokens
from app.tokens.models import Token
from app.tokens.rules import TokenKind
from app.users.models import User
from app.worker.jobs import Context
from app.worker.loop import CycleReport, run_cycle
from tests.conftest import Database, PlanFixture


@dataclass
class Received:
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return self.message["Subject"]

    @property
    def body(self) -> str:
        return self.message.get_content()


@dataclass
class SmtpRecorder:
    """The aiosmtpd handler: its hooks run on the server's own thread and event loop."""

    mode: str = "accept"  # accept | outage | reject
    received: list[Received] = field(default_factory=list)
    refused: int = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001, ANN201, N802
        if self.mode == "reject":
            self.refused += 1
            return f"550 5.1.1 <{address}>: Recipient address rejected: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201, N802
        if self.mode == "outage":
            self.refused += 1
            return "451 4.3.0 Mail system temporarily unavailable, try again later"
        message = message_from_bytes(envelope.content, policy=policy.default)
        self.received.append(Received(list(envelope.rcpt_tos), message))
        return "250 2.0.0 Message accepted for delivery"

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address.lower() in r.rcpt_tos]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SmtpServer:
    port: int
    recorder: SmtpRecorder
    controller: Controller

    def to(self, address: str) -> list[Received]:
        return self.recorder.to(address)

    @property
    def mode(self) -> str:
        return self.recorder.mode

    @mode.setter
    def mode(self, value: str) -> None:
        self.recorder.mode = value


def start_smtp() -> SmtpServer:
    recorder = SmtpRecorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    return SmtpServer(port, recorder, controller)


def worker_settings(database: Database, port: int | None, **extra: object) -> Settings:
    values: dict[str, object] = dict(
        database_url=database.url, issuer="https://tessera.test",
        secret_key="test-secret-key-for-signing-cookies",
        smtp_host="127.0.0.1" if port else None, smtp_port=port or 25,
        smtp_from="Tessera <noreply@tessera.test>", smtp_timeout_seconds=5)
    return Settings(**{**values, **extra})


def make_worker(database: Database, clock: FrozenClock, smtp: SmtpServer | None,
                **extra: object) -> Context:
    """A worker of its own: its own sessions (connections) and worker id, a shared clock."""
    settings = worker_settings(database, smtp.port if smtp else None, **extra)
    return Context.create(make_sessionmaker(database.engine), clock, settings)


async def cycle(ctx: Context) -> CycleReport:
    report = await run_cycle(ctx)
    assert report.ok, {k: v.error for k, v in report.jobs.items() if v.error}
    return report


async def issue(db: Database, plan: PlanFixture, *, user_id: uuid.UUID | None = None,
                kind: TokenKind = TokenKind.personal, name: str | None = "ci deploy",
                at: datetime | None = None, **extra: object) -> Token:
    async with session_scope(make_sessionmaker(db.engine)) as session:
        token, _secret = tokens.issue(session, kind=kind, plan_id=plan.plan_id,
                                      user_id=user_id, name=name,
                                      now=at or plan.clock.now(), **extra)
    return token


@dataclass
class Owner:
    user_id: uuid.UUID
    email: str


async def add_owners(db: Database, plan: PlanFixture, n: int) -> list[Owner]:
    """Users with no password (quicker than `plan.add_user`, which hashes one)."""
    owners = [Owner(uuid.uuid4(), f"owner-{uuid.uuid4().hex[:10]}@example.com") for _ in range(n)]
    async with session_scope(make_sessionmaker(db.engine)) as session:
        session.add_all(User(id=o.user_id, plan_id=plan.plan_id, email=o.email, name="Owner",
                             role="member", created_at=plan.clock.now()) for o in owners)
    return owners


async def add_integration(db: Database, plan: PlanFixture, name: str = "Billing sync",
                          **extra: object) -> Integration:
    now = plan.clock.now()
    async with session_scope(make_sessionmaker(db.engine)) as session:
        values: dict[str, object] = dict(
            id=uuid.uuid4(), client_id=f"tc_{uuid.uuid4().hex[:24]}", name=name, kind="custom",
            plan_id=plan.plan_id, redirect_uris=[], scopes=[], confidential=True,
            can_introspect=False, data_access="limited", review_status="not_reviewed",
            review_steps={}, created_at=now, created_by="test")
        integ = Integration(**{**values, **extra})
        session.add(integ)
        await session.flush()
        session.add(Installation(id=uuid.uuid4(), integration_id=integ.id, plan_id=plan.plan_id,
                                 state="active", installed_at=now))
    return integ


async def outbox_rows(db: Database, token_id: uuid.UUID) -> list[OutboxMessage]:
    async with make_sessionmaker(db.engine)() as session:
        return list((await session.execute(
            select(OutboxMessage).where(OutboxMessage.token_id == token_id)
            .order_by(OutboxMessage.created_at, OutboxMessage.kind))).scalars())


async def token_row(db: Database, token_id: uuid.UUID) -> Token:
    async with make_sessionmaker(db.engine)() as session:
        return (await session.execute(select(Token).where(Token.id == token_id))).scalar_one()
