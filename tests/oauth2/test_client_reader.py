"""Client authentication through the batched client reader (app/oauth2/clients.py): the callers
of concurrent requests are read in one SELECT, and each request still gets its own verdict."""

from __future__ import annotations

import asyncio

import httpx2
import pytest

from app.oauth2.clients import ClientReader
from tests.helpers import create_gateway_client
from tests.tokens.test_batches import statements

pytestmark = pytest.mark.asyncio


def client_selects(seen: list[str]) -> int:
    return sum(s.startswith("SELECT") and "FROM INTEGRATIONS" in s for s in seen)


async def test_reader_answers_each_client_id_and_none_for_unknown(client, plan,
                                                                  database) -> None:
    first = await create_gateway_client(client, plan)
    second = await create_gateway_client(client, plan, can_introspect=False)
    reader = ClientReader(database.engine)
    with statements(database.engine) as seen:
        a, b, again, unknown = await asyncio.gather(
            reader.find(first[0]), reader.find(second[0]), reader.find(first[0]),
            reader.find("tc_no_such_client"))
    assert client_selects(seen) == 1  # four lookups, one statement
    assert a is not None and b is not None and again == a
    assert unknown is None
    assert (a.facts.client_id, a.facts.can_introspect, a.facts.plan_id) == \
        (first[0], True, plan.plan_id)
    assert (b.facts.client_id, b.facts.can_introspect) == (second[0], False)
    assert a.secret_digest is not None and a.secret_digest != b.secret_digest


async def test_concurrent_introspections_share_one_client_read_and_keep_their_verdicts(
        client, plan, database) -> None:
    """Without a serving cache (as under a test client: no lifespan, no listener) every
    introspection authenticates its caller against the database."""
    good = await create_gateway_client(client, plan)
    other = await create_gateway_client(client, plan)
    token = (await plan.add_user()).token

    async def call(auth: tuple[str, str]) -> httpx2.Response:
        return await client.post("/oauth2/introspect", data={"token": token}, auth=auth)

    callers = [good, other, (good[0], "tss_wrong"), ("tc_no_such_client", good[1])] * 5
    with statements(database.engine) as seen:
        answers = await asyncio.gather(*(call(auth) for auth in callers))
    for auth, r in zip(callers, answers, strict=True):
        if auth in (good, other):
            assert r.status_code == 200 and r.json()["active"] is True, r.text
        else:
            assert r.status_code == 401, r.text
            assert r.json()["error"] == "invalid_client"
            assert r.headers["www-authenticate"].startswith("Basic")
    # 20 requests: their callers were read in far fewer statements than one each.
    assert 1 <= client_selects(seen) < len(callers) // 2, seen


async def test_a_client_id_that_cannot_exist_never_reaches_the_shared_read(client,
                                                                          plan) -> None:
    """A NUL in a client id fails a PostgreSQL statement: read with the callers of other
    requests, it would fail them all. Such ids are refused without a read."""
    good = await create_gateway_client(client, plan)
    token = (await plan.add_user()).token
    bad_ids = ["tc_\x00", "x" * 65, "tc_\u00e9"]

    async def call(auth: tuple[str, str] | None = None,
                   data: dict[str, str] | None = None) -> httpx2.Response:
        return await client.post("/oauth2/introspect", data={"token": token, **(data or {})},
                                 auth=auth)

    answers = await asyncio.gather(  # one tick: one batch, had the bad ids been read
        *(call(good) for _ in range(5)),
        *(call((bad, good[1])) for bad in bad_ids),
        *(call(data={"client_id": bad, "client_secret": good[1]}) for bad in bad_ids))
    assert [r.status_code for r in answers] == [200] * 5 + [401] * 6, \
        [(r.status_code, r.text) for r in answers]
    assert all(r.json()["active"] is True for r in answers[:5])
    assert {r.json()["error"] for r in answers[5:]} == {"invalid_client"}
