"""How `tessera serve` reads requests: uvicorn's httptools protocol, with time limits on the
client (rule 12: abuse costs the attacker, not the service).

uvicorn bounds only the idle time between requests of a kept-alive connection. A client that
opens a connection and sends half a request line, or headers a byte at a time, or a body that
never ends, would hold a connection (and, for the body, a request task) for as long as it likes.
Here a request's headers must arrive within `TESSERA_HEADER_TIMEOUT_SECONDS` of its first byte
(of the connection, for the first request), and its body within `TESSERA_BODY_TIMEOUT_SECONDS`
of its headers; past that the connection is answered 408 (or, once the application has begun
its answer, closed).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.config import get_settings

_TIMEOUT_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: 25\r\nconnection: close\r\n\r\nthe request came too slow")


class SlowClientGuard(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body read deadlines."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self._header_seconds = settings.header_timeout_seconds
        self._body_seconds = settings.body_timeout_seconds
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        started = self.cycle is not None and self.cycle.response_started
        if not started:
            self.transport.write(_TIMEOUT_408)
        if self.cycle is not None:
            self.cycle.keep_alive = False
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._header_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self._header_seconds)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self._body_seconds)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()
