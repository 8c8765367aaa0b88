from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app import credentials
from app.audit import service as audit
from app.db import connection, has_only_read, persist_before_refusing, release, rows
from app.errors import Busy, Conflict, TooManyAtOnce, TooManyAttempts
from app.throttle import hashing
from app.throttle import store as throttle
from app.throttle.store import Throttles
from app.tokens import cache
from app.users import facts
from app.users.models import User
from app.users.schemas import UserOut

T = TypeVar("T")
log = logging.getLogger("tessera.users")


async def hash_password(password: str) -> str:
    # argon2id costs tens of milliseconds of CPU: off the event loop, and bounded (rule 12).
    return await _hashed(credentials.hash_password, password)


async def _hashed(work: Callable[..., T], *args: Any,  # noqa: ANN401
                  before: Callable[[], Awaitable[None]] | None = None,
                  after: Callable[[T], Awaitable[None]] | None = None,
                  source: str | None = None) -> T:
    try:
        return await hashing.SLOTS.run(work, *args, before=before, after=after, source=source)
    except hashing.Busy:
        raise Busy() from None
    except hashing.Crowding:
        raise TooManyAtOnce() from None


async def create(session: AsyncSession, *, plan_id: uuid.UUID, email: str, name: str, role: str,
                 password: str, actor: str, now: datetime) -> User:
    if has_only_read(session):
        # No pool connection held while the password waits for, and takes, a hashing slot.
        await session.close()
    user = User(id=uuid.uuid4(), plan_id=plan_id, email=email.strip().lower(), name=name,
                role=role, password_hash=await hash_password(password), created_at=now)
    session.add(user)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        # Only this plan's users can conflict: another plan's are no business of this one.
        raise Conflict("a user of this plan has this email", code="email_taken") from None
    await audit.record(session, actor, "user.created", plan_id, "user", user.id, now, role=role)
    await cache.changed(session, user_id=user.id)  # the plan's list, kept on every replica
    return user


async def account(session: AsyncSession, login: str) -> User | None:
    """The account a login name names: `email`, or `<plan id>/email` where one email has
    accounts in several plans (emails are unique per plan). A bare email names its oldest
    account, so a sign-in checks one password hash whatever the number of accounts: its time
    tells nothing of other plans."""
    login = login.strip().lower()
    query = select(User)
    plan, slash, email = login.partition("/")
    if slash:
        try:
            query = query.where(User.plan_id == uuid.UUID(plan), User.email == email)
        except ValueError:
            return None
    else:
        query = query.where(User.email == login)
    return (await session.execute(
        query.order_by(User.created_at, User.id).limit(1))).scalar_one_or_none()


async def authenticate(session: AsyncSession, email: str, password: str) -> User | None:
    """Email + password login; the same work whether or not the email exists.

    The session must hold no writes: it is closed (its connection back in the pool, the user
    kept as read) while the password is checked, tens of milliseconds in a thread, so that
    requests with wrong passwords cannot hold the pool's connections. Used again, it begins
    afresh."""
    user, ok = await _check(session, email, password)
    return user if ok else None


async def _check(session: AsyncSession, email: str, password: str, *,
                 before: Callable[[], Awaitable[None]] | None = None,
                 after: Callable[[bool], Awaitable[None]] | None = None,
                 source: str | None = None) -> tuple[User | None, bool]:
    user = await account(session, email)
    if not has_only_read(session):
        raise RuntimeError("authenticate needs a session that has only read")
    await session.close()
    ok = await _hashed(credentials.verify_password, user.password_hash if user else None,
                       password, before=before, after=after, source=source)
    return user, ok


async def sign_in(session: AsyncSession, email: str, password: str, *, via: str,
                  now: datetime, client_id: str | None = None, throttles: Throttles | None = None,
                  source: str | None = None) -> User | None:
    """`authenticate`, guarded (rule 12) and recorded. A login name or source address that
    failed too often is refused before any password is checked (`TooManyAttempts`); a failure
    counts against both, shared by every replica (`throttles`). A failed attempt on an existing
    account is recorded in its plan's audit trail (`user.sign_in_failed`: the account and how,
    never what was typed) and committed before the caller refuses. A success is the caller's
    to record, with what it leads to. An unknown email is recorded nowhere in an audit trail:
    there is no plan to tell."""
    keys = throttle.password_keys(email, source)

    async def still_allowed() -> None:
        if throttles is not None and (wait := await throttles.check(keys, now)) is not None:
            raise TooManyAttempts(wait)

    async def counted(ok: bool) -> None:
        if throttles is not None and not ok:
            await throttles.failed(keys, now)

    # The throttle's check may take a connection of its own (SQLite reads its rows): the
    # session gives back what it read with before (the client, at the authorization endpoint).
    await release(session)
    await still_allowed()
    # Checked again at its turn for a hashing slot, and a failure counted before the slot is
    # let go: a burst sent at once gets no more checks than the limit.
    user, ok = await _check(session, email, password, before=still_allowed, after=counted,
                            source=throttle.source_of(source) if source else None)
    if ok:
        if throttles is not None:
            await throttles.succeeded(keys)
        if credentials.needs_rehash(user.password_hash):
            await _rehash(session, user, password)
        return user
    log.info("sign-in failed", extra={"event": "sign_in_failed", "via": via,
                                      "account": str(user.id) if user else None,
                                      "client_id": client_id, "source": source})
    if user is not None:
        await audit.record(session, f"user:{user.id}", "user.sign_in_failed", user.plan_id,
                           "user", user.id, now, via=via, client_id=client_id)
        await persist_before_refusing(session)
    return None


async def _rehash(session: AsyncSession, user: User, password: str) -> None:
    """A hash made with other parameters (`credentials`), remade now that the password is known:
    on a connection of its own, the caller's session keeping only what it read."""
    new_hash = await _hashed(credentials.hash_password, password)
    async with connection(session.bind, begin=True) as conn:
        await conn.execute(update(User).where(User.id == user.id,
                                              User.password_hash == user.password_hash)
                           .values(password_hash=new_hash))


# The plan's users as the API shows them: columns, not ORM objects (a tenth of the work), by a
# statement built once.
_IN_PLAN = select(*facts.COLUMNS).where(User.plan_id == bindparam("plan_id")) \
    .order_by(User.created_at, User.id)


async def list_in_plan(session: AsyncSession, plan_id: uuid.UUID,
                       kept: cache.TokenCache | None = None) -> list[UserOut]:
    """The plan's users, oldest first. With `kept` (the token cache), as kept there while no
    user was added since (`TokenCache.get_plan_users`): users are only ever added, and each
    addition is announced to every replica."""
    return list(await in_plan(session, plan_id, kept))  # no caller changes the next one's


async def in_plan(session: AsyncSession, plan_id: uuid.UUID,
                  kept: cache.TokenCache | None = None) -> tuple[UserOut, ...]:
    """`list_in_plan`, as the tuple kept: the same object for as long as it is kept (a page
    drawn from it is kept by it: `app.console.web.render_kept`)."""
    if kept is not None and (found := kept.get_plan_users(plan_id)) is not None:
        return found
    generation = kept.users_generation if kept is not None else 0
    found = tuple(facts.of(row) for row in await rows(session, _IN_PLAN, {"plan_id": plan_id}))
    if kept is not None:
        kept.put_plan_users(plan_id, found, generation)
    return found
