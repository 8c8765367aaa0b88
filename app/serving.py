"""How `tessera serve` reads requests: uvicorn's httptools protocol, with time limits on the
client (rule 12: abuse costs the attacker, not the service).

uvicorn bounds only the idle time between requests of a kept-alive connection. A client that
opens a connection and sends half a request line, or headers a byte at a time, or a body that
never ends, would hold a connection (and, for the body, a request task) for as long as it likes.
Here a request's headers must arrive within `TESSERA_HEADER_TIMEOUT_SECONDS` of its first byte
(of the connection, for the first request), and its body within `TESSERA_BODY_TIMEOUT_SECONDS`
of its headers; past that the connection is answered 408 (or, once the application has begun
its answer, closed). Bytes that begin no request (blank lines between kept-alive requests) do
not keep a connection open: the header deadline runs from the first of them. A client that
stops reading its answer (the server's send buffer full) for `TESSERA_BODY_TIMEOUT_SECONDS`
loses the connection, so it cannot hold a request task by not reading.
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
        self._stalled: asyncio.TimerHandle | None = None

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
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Between requests nothing is armed (uvicorn's keep-alive timer is stopped by any byte):
        # whatever comes starts the header deadline, a request or not.
        if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._arm(self._header_seconds)
        super().data_received(data)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stalled is None:
            self._stalled = self.loop.call_later(self._body_seconds, self._not_reading)

    def resume_writing(self) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None
        super().resume_writing()

    def _not_reading(self) -> None:
        self._stalled = None
        if self.cycle is not None:
            self.cycle.keep_alive = False
        self.transport.abort()  # close() would wait for the buffer the client does not read

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self._header_seconds)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self._body_seconds)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()
