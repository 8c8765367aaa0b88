"""The request's transaction commits before its response starts: a client never holds a token
whose row is not yet committed, and a failed commit can never follow a success answer."""

from __future__ import annotations

import httpx2
import pytest
from sqlalchemy import func, select

from app.db import make_sessionmaker
from app.tokens.models import Token

pytestmark = pytest.mark.asyncio


async def test_token_row_is_committed_when_the_response_starts(app, plan, database) -> None:
    user = await plan.add_user(token=False)
    seen: list[int] = []
    maker = make_sessionmaker(database.engine)

    async def committed_tokens() -> int:
        async with maker() as s:  # its own connection: sees only committed rows
            return (await s.execute(select(func.count()).select_from(Token)
                                    .where(Token.user_id == user.user_id))).scalar_one()

    async def probe(scope, receive, send):  # noqa: ANN001, ANN202
        async def watching(message):  # noqa: ANN001, ANN202
            if message["type"] == "http.response.start":
                seen.append(await committed_tokens())
            await send(message)

        await app(scope, receive, watching)

    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=probe),
                                  base_url="https://tessera.test") as client:
        r = await client.post("/v1/me/tokens", json={"name": "ordering"},
                              auth=(user.email, user.password))
    assert r.status_code == 201
    assert seen == [1]


@pytest.mark.asyncio
async def test_a_session_never_used_is_not_made_to_be_asked_or_closed(database) -> None:
    """`has_only_read` and `close` on a unit of work's session that nothing used (a personal
    token's creation: the caller came from the token cache) answer without making one."""
    from app.db import LazySession, has_only_read, session_scope

    async with session_scope(make_sessionmaker(database.engine)) as session:
        assert isinstance(session, LazySession)
        assert has_only_read(session)
        await session.close()
        assert session.made is None
        await session.execute(select(func.count()).select_from(Token))
        assert session.made is not None and has_only_read(session)
        session.info["tessera.wrote"] = True
        assert not has_only_read(session)
        session.info.clear()
        await session.close()
