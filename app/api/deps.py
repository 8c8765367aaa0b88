"""Request-scoped dependencies: the unit of work, the clock, the settings.

They are `async def` on purpose: FastAPI runs plain `def` dependencies in its thread pool, a
thread hop per request on the hot path for nothing.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import Clock
from app.config import Settings
from app.db import session_scope

# Requests that only read: the management API's GETs (a console's and a script's everyday
# calls), served by read-only sessions without a transaction's round trips (`app.db`).
_READS = frozenset({"GET", "HEAD"})
# ... and the console's pages (`app.console`), which only read to show them.
_READ_ONLY_PATHS = ("/v1/", "/console/")


SESSION = "tessera.session"


def unit_of_work(request: Request) -> AbstractAsyncContextManager[AsyncSession]:
    """The request's unit of work (`app.db.session_scope`): a read-only session for the
    requests that only read, the application's sessions otherwise."""
    state = request.app.state
    maker = state.read_sessionmaker if (
        request.method in _READS and request.scope["path"].startswith(_READ_ONLY_PATHS)) \
        else state.sessionmaker
    return session_scope(maker)


async def get_session(request: Request) -> AsyncSession:
    """The session of the unit of work the route opened around its handler
    (`app.api.routing.UnitOfWorkRoute`)."""
    return request.scope[SESSION]


async def get_clock(request: Request) -> Clock:
    return request.app.state.clock


async def get_now(request: Request) -> datetime:
    """The request's one instant: every rule in a request is judged at the same time."""
    return request.app.state.clock.now()


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


# The unit of work commits when the handler returns, *before* the response is sent, so no client
# ever holds a token (or a success) whose row is not yet committed (`UnitOfWorkRoute`).
Session = Annotated[AsyncSession, Depends(get_session)]
Now = Annotated[datetime, Depends(get_now)]
AppSettings = Annotated[Settings, Depends(get_settings)]
