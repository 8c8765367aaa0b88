"""The login session's cookie (`app.oauth2.browser.login_session`): a signature found good is
remembered, its age is not: a cookie past its hour, or signed in the future, is refused every
time, however often it was good before; a forged or tampered one is never remembered."""

from __future__ import annotations

import time
import uuid

import pytest
from itsdangerous import TimestampSigner
from starlette.requests import Request

from app.config import Settings
from app.oauth2 import browser
from app.oauth2.browser import SESSION_COOKIE, SESSION_MAX_AGE, login_session, start_session


def _settings(*keys: str) -> Settings:
    return Settings(database_url="sqlite+aiosqlite:///:memory:", issuer="https://tessera.test",
                    secret_key=",".join(keys))


def _signed(settings: Settings, user_id: uuid.UUID) -> str:
    from starlette.responses import Response
    response = Response()
    start_session(response, settings, user_id)
    cookie = response.headers["set-cookie"]
    return cookie.split(";", 1)[0].split("=", 1)[1]


def _read(settings: Settings, value: str) -> uuid.UUID | None:
    scope = {"type": "http", "headers": [(b"cookie", f"{SESSION_COOKIE}={value}".encode())]}
    found = login_session(Request(scope), settings)
    return found.user_id if found else None


def test_a_good_cookie_is_read_again_within_its_hour_only(monkeypatch) -> None:
    settings = _settings("k" * 32)
    user = uuid.uuid4()
    signed_at = int(time.time())
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda _self: signed_at)
    cookie = _signed(settings, user)
    clock = {"now": signed_at}
    monkeypatch.setattr(browser.time, "time", lambda: clock["now"])
    assert _read(settings, cookie) == user
    assert (tuple(settings.secret_keys), cookie) in browser._GOOD
    clock["now"] = signed_at + SESSION_MAX_AGE
    assert _read(settings, cookie) == user  # the last second of its hour
    clock["now"] = signed_at + SESSION_MAX_AGE + 1
    assert _read(settings, cookie) is None
    clock["now"] = signed_at - 1  # signed "in the future"
    assert _read(settings, cookie) is None
    clock["now"] = signed_at
    assert _read(settings, cookie) == user


def test_forged_tampered_or_rotated_out_cookies_are_refused_and_not_kept() -> None:
    old, new = "o" * 32, "n" * 32
    settings = _settings(old)
    user = uuid.uuid4()
    cookie = _signed(settings, user)
    before = dict(browser._GOOD)
    payload, _, signature = cookie.rpartition(".")
    for bad in (cookie[:-2] + ("AA" if cookie[-2:] != "AA" else "BB"), payload + ".",
                "x" * 4000, cookie + "x", "", "\x00"):
        assert _read(settings, bad) is None, bad
    assert browser._GOOD == before
    # Read under the signing key, under a rotation (new first, old still verifies), and not
    # once the old key is gone: each set of keys decides for itself.
    assert _read(settings, cookie) == user
    assert _read(_settings(new, old), cookie) == user
    assert _read(_settings(new), cookie) is None


@pytest.mark.parametrize("count", [browser._KEPT + 10])
def test_at_most_so_many_good_cookies_are_kept(count: int) -> None:
    settings = _settings("m" * 32)
    first = _signed(settings, uuid.uuid4())
    _read(settings, first)
    for _ in range(count):
        _read(settings, _signed(settings, uuid.uuid4()))
    assert len(browser._GOOD) <= browser._KEPT
    assert (tuple(settings.secret_keys), first) not in browser._GOOD  # the oldest went first
    assert _read(settings, first) is not None  # and is simply checked again


def test_a_good_cookie_with_anything_added_is_refused_and_never_kept() -> None:
    """itsdangerous' base64 skips characters outside its alphabet, so a good cookie padded
    with them would verify: as many padded copies as an attacker likes, each a new value to
    keep. A cookie of ours is base64url text and dots, of ~130 characters."""
    settings = _settings("p" * 32)
    user = uuid.uuid4()
    cookie = _signed(settings, user)
    assert len(cookie) < 200
    before = len(browser._GOOD)
    for padded in (cookie + "*~", cookie + "~" * 10, cookie + "*" * 65536,
                   cookie.replace(".", ".*", 1), cookie + "A" * 600):
        assert _read(settings, padded) is None
    assert len(browser._GOOD) == before
    assert _read(settings, cookie) == user
