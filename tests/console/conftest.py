"""Signing in to the console over HTTP, as a browser's form does (the CSRF token read from the
page), for the tests that need no real browser."""

from __future__ import annotations

import re

import httpx2

from tests.conftest import Member

_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _TOKEN.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


async def sign_in(client: httpx2.AsyncClient, member: Member) -> str:
    """Sign `member` in through the login form; the CSRF token of the signed-in pages."""
    page = await client.get("/console/login")
    assert page.status_code == 200, page.text
    r = await client.post("/console/login", data={
        "email": member.email, "password": member.password,
        "csrf_token": csrf_of(page.text), "next": "/console/me/api-access"})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/console/me/api-access"
    home = await client.get("/console/me/api-access")
    assert home.status_code == 200, home.text
    return csrf_of(home.text)
