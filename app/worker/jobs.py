"""The worker's jobs, in the order a cycle runs them. Each is safe to run on every replica at
once: rows are claimed with `FOR UPDATE SKIP LOCKED` and outcomes are keyed uniquely."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import Clock
from app.config import Settings
from app.db import session_scope
from app.notifications import mailer as mail
from app.notifications import outbox, reminders, sweeps
from app.oauth2.proofs import UsedProof
from app.throttle.store import Throttles
from app.worker import deactivations

# How long a throttle key with nothing in force is remembered: past every limit's window and
# longest block.
THROTTLE_MEMORY = timedelta(days=1)

log = logging.getLogger("tessera.worker")


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Context:
    maker: async_sessionmaker[AsyncSession]
    clock: Clock
    settings: Settings
    mailer: mail.Mailer | None  # None: no SMTP host; notices wait in the outbox
    worker_id: str = field(default_factory=new_worker_id)

    @classmethod
    def create(cls, maker: async_sessionmaker[AsyncSession], clock: Clock, settings: Settings,
               *, mailer: mail.Mailer | None = None) -> Context:
        return cls(maker, clock, settings, mailer or mail.from_settings(settings))

    def sweep(self) -> sweeps.Sweep:
        return sweeps.Sweep(now=self.clock.now(), batch_size=self.settings.worker_batch_size,
                            base_url=self.settings.issuer,
                            lead=timedelta(days=self.settings.notice_lead_days))


Job = Callable[[Context], Awaitable[Counter[str]]]


async def mark_expired(ctx: Context) -> Counter[str]:
    return await sweeps.mark_expired(ctx.maker, ctx.sweep())


async def enqueue_expiring(ctx: Context) -> Counter[str]:
    return await sweeps.enqueue_expiring(ctx.maker, ctx.sweep())


async def deliver_notices(ctx: Context) -> Counter[str]:
    if ctx.mailer is None:
        # Never lost: they wait, and go out once TESSERA_SMTP_HOST is set.
        waiting = await outbox.waiting(ctx.maker)
        if waiting:
            log.warning("%d notice(s) wait in the outbox: TESSERA_SMTP_HOST is not set (or set "
                        "TESSERA_MAIL_LOG_ONLY=true to write them to the log instead)", waiting)
        return Counter(waiting=waiting)
    return await outbox.deliver(ctx.maker, ctx.mailer, ctx.clock, worker_id=ctx.worker_id,
                                smtp_timeout_seconds=ctx.settings.smtp_timeout_seconds,
                                batch_size=ctx.settings.worker_batch_size,
                                settled="logged" if isinstance(ctx.mailer, mail.LogMailer)
                                else "sent")


async def prune_notices(ctx: Context) -> Counter[str]:
    return await outbox.prune(ctx.maker, now=ctx.clock.now(),
                              retention=timedelta(days=ctx.settings.outbox_retention_days),
                              batch_size=ctx.settings.worker_batch_size)


async def prune_throttles(ctx: Context) -> Counter[str]:
    engine = ctx.maker.kw["bind"]
    forgotten = await Throttles(engine).prune(ctx.clock.now(), THROTTLE_MEMORY)
    return Counter(forgotten=forgotten) if forgotten else Counter()


async def deactivate_due(ctx: Context) -> Counter[str]:
    return await deactivations.deactivate_due(ctx.maker, ctx.clock.now(),
                                              batch_size=ctx.settings.worker_batch_size,
                                              base_url=ctx.settings.issuer)


async def prune_proofs(ctx: Context) -> Counter[str]:
    """Used DPoP proofs whose `iat` left the accepted window: a replay of one is refused by
    its `iat` now (app.oauth2.dpop)."""
    async with session_scope(ctx.maker) as session:
        gone = (await session.execute(delete(UsedProof).where(
            UsedProof.expires_at < ctx.clock.now()))).rowcount
    return Counter(forgotten=gone) if gone else Counter()


async def remind_admins(ctx: Context) -> Counter[str]:
    return await reminders.sweep(ctx.maker, now=ctx.clock.now(), base_url=ctx.settings.issuer,
                                 lead_days=ctx.settings.reminder_lead_days,
                                 batch_size=ctx.settings.worker_batch_size)


# Mark (with its "expired" notice) before the "expiring" notices, and write the admins'
# reminders, all before delivery, so what a cycle sees is mailed about in that cycle. (Nothing
# is ever unmarked: expiry is final, rule 4.)
JOBS: list[tuple[str, Job]] = [
    ("expiry.mark", mark_expired),
    ("notices.expiring", enqueue_expiring),
    ("integrations.deactivate", deactivate_due),
    ("integrations.remind", remind_admins),
    ("notices.deliver", deliver_notices),
    ("notices.prune", prune_notices),
    ("throttles.prune", prune_throttles),
    ("dpop.prune", prune_proofs),
]
