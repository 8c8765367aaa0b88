"""How `tessera serve` reads requests: uvicorn's httptools protocol, with time limits on the
client (rule 12: abuse costs the attacker, not the service).

uvicorn bounds only the idle time between requests of a kept-alive connection. A client that
opens a connection and sends half a request line, or headers a byte at a time, or a body that
never ends, would hold a connection (and, for the body, a request task) for as long as it likes.
Here a request's headers must arrive within `TESSERA_HEADER_TIMEOUT_SECONDS` of its first byte
(of the connection, for the first request), and its body within `TESSERA_BODY_TIMEOUT_SECONDS`
of its headers; past that the connection is answered 408 (or, once the application has begun
its answer, or while it answers an earlier, pipelined request, closed after the head it holds).
Bytes that begin no request (blank lines between kept-alive requests) do not keep a connection
open: the header deadline runs from the first of them. A client that stops reading its answer
(the server's send buffer full) for `TESSERA_BODY_TIMEOUT_SECONDS` loses the connection, so it
cannot hold a request task by not reading.

It also answers the two hottest requests without an ASGI request, when their answer needs no
I/O: a gateway check (`GET` or `HEAD /v1/gateway/check`: a cached bearer token, or no usable
`Authorization`; `gateway.service.decide_cached`) as soon as its headers are parsed, and an
introspection (`POST /oauth2/introspect`, a form of at most 4 KiB: its caller's credentials and
the token cached; `introspection.handle_cached`) once its body is whole. The answer is the
application's own, with its request id and metrics (`Observed.quick_check`,
`quick_introspection`). uvicorn would otherwise make a task, a scope, ASGI messages and a
Starlette response for each, which cost more than the answer itself (bench/NOTES.md, twelfth
pass). Everything else goes to the application as before: other requests, a check or an
introspection that must read the database or verify a DPoP proof (an introspection whose body
was collected here is handed on whole), one that arrives while an earlier request of the
connection is still being answered (pipelining keeps its order), or while the client is not
reading its answers, one over HTTP/1.0, asking for an upgrade or a `100 Continue`, or with a
body of another shape.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.config import get_settings
from app.gateway.endpoints import CHECK
from app.oauth2.fast_path import MAX_BODY
from app.ops.observe import INTROSPECT, observed_in

_CHECK = CHECK.encode()
_CHECK_QUERY = _CHECK + b"?"
_INTROSPECT = INTROSPECT.encode()
_METHODS = {b"GET": "GET", b"HEAD": "HEAD"}

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_TIMEOUT_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: 25\r\nconnection: close\r\n\r\nthe request came too slow")


class OneWrite:
    """A request's view of its connection's transport, through which uvicorn's cycle writes
    its answer: the status line and headers are held until the body's first bytes and leave
    with them, in one write. uvicorn writes them apart, two `send` calls per answer, each a
    system call and a TCP segment the client is woken for (bench/NOTES.md, sixteenth pass).
    A `100 Continue` passes at once; so does the head of an answer to `HEAD`, which has no
    body to wait for. Closing sends what is held first; aborting drops it, as it drops the
    transport's own buffer."""

    __slots__ = ("_transport", "_hold", "_head")

    def __init__(self, transport: asyncio.Transport, *, head_only: bool) -> None:
        self._transport = transport
        self._hold = not head_only  # the next write (not a 100 Continue) is the head
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._hold and data != _CONTINUE:
            self._hold = False
            self._head = bytes(data)
            return
        if self._head is not None:
            data, self._head = self._head + data, None
        self._transport.write(data)

    def close(self) -> None:
        if self._head is not None:
            self._transport.write(self._head)
            self._head = None
        self._transport.close()

    def abort(self) -> None:
        self._head = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - the transport's own
        return getattr(self._transport, name)


class SlowClientGuard(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body read deadlines."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self._header_seconds = settings.header_timeout_seconds
        self._body_seconds = settings.body_timeout_seconds
        # The running deadline (loop time), and one timer per connection that looks at it: a
        # deadline moves with every request, a timer is made only when it would fire too late
        # (rather than three made and cancelled per request).
        self._deadline: float | None = None
        self._idle = False  # the deadline is the keep-alive limit between requests
        self._timer: asyncio.TimerHandle | None = None
        self._stalled: asyncio.TimerHandle | None = None
        self._observed = observed_in(self.app)
        self._answered = False  # the current request was answered here
        self._form: list[bytes] | None = None  # an introspection's body, while it comes
        self._last = False  # the server is shutting down: close after the current answer
        # The cycle whose answer is being made (uvicorn's `self.cycle` is the last one parsed,
        # which may wait in the pipeline behind it).
        self._answering: Any = None

    def _arm(self, seconds: float) -> None:
        deadline = self.loop.time() + seconds
        self._deadline, self._idle = deadline, False
        if self._timer is not None and self._timer.when() > deadline:
            self._timer.cancel()
            self._timer = None
        if self._timer is None:
            self._timer = self.loop.call_at(deadline, self._look)

    def _disarm(self) -> None:
        self._deadline, self._idle = None, False

    def _look(self) -> None:
        self._timer = None
        if self._deadline is None:
            return
        if self._deadline - self.loop.time() > 0.001:  # moved on since this timer was made
            self._timer = self.loop.call_at(self._deadline, self._look)
            return
        if self._idle:
            self._deadline, self._idle = None, False
            self.timeout_keep_alive_handler()  # uvicorn's: the connection was idle too long
            return
        self._too_slow()

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None:
            self.cycle.keep_alive = False
        # An answer being made whose request is read whole is not what came too slow (a later,
        # pipelined request is), and one that has begun cannot be replaced: no 408 then, which
        # the client would take for that answer; the connection is closed through the answer's
        # `OneWrite`, so the head it holds goes out first. Otherwise (no answer being made, or
        # its own body is what is late, before it began) the 408 is the answer.
        answering = self._answering
        if answering is not None and not answering.response_complete \
                and (answering.response_started or not answering.more_body):
            answering.keep_alive = False
            answering.transport.close()
            return
        self.transport.write(_TIMEOUT_408)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._header_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Any byte ends the idle time between requests (uvicorn's keep-alive limit), and
        # whatever comes then starts the header deadline, a request or not.
        if self._idle:
            self._deadline, self._idle = None, False
        if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._arm(self._header_seconds)
        super().data_received(data)

    def on_response_complete(self) -> None:
        """uvicorn's, with its keep-alive limit kept as this connection's deadline: uvicorn
        makes a timer after every answer and cancels it at the next request's first byte,
        ~5% of a cached introspection's samples (bench/NOTES.md, twelfth pass)."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._answering = cycle
            self._start_asgi_task(cycle, app)
        else:
            self._arm(self.timeout_keep_alive)
            self._idle = True

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
        if self._observed is not None and self._free():
            url = self.url
            method = _METHODS.get(self.parser.get_method())
            if method is not None and (url == _CHECK or url.startswith(_CHECK_QUERY)) \
                    and not self._has_body() and self._answer_check(method, url):
                self._answered = True
                return
            if method is None and url == _INTROSPECT and self._small_body():
                self._form = []  # collected here; answered, or handed on, when it is whole
                self._arm(self._body_seconds)
                return
        self._start_cycle()
        self._arm(self._body_seconds)

    def _start_cycle(self) -> None:
        """uvicorn's: the request's cycle made (and started, or queued behind the answer in
        progress), writing its answer in one write (`OneWrite`)."""
        before = self.cycle
        HttpToolsProtocol.on_headers_complete(self)
        if self.cycle is not before:  # none is made for an upgrade
            self.cycle.transport = OneWrite(self.transport,
                                            head_only=self.scope["method"] == "HEAD")
            if before is None or before.response_complete:  # started, not queued (uvicorn's)
                self._answering = self.cycle

    def on_body(self, body: bytes) -> None:
        if self._form is not None:
            self._form.append(body)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        if self._answered:
            self._answered = False
            self.on_response_complete()  # uvicorn's own: the count, keep-alive timer, pipelining
            return
        if self._form is not None:
            body, self._form = b"".join(self._form), None
            answer = self._observed.quick_introspection(self.headers, body)
            if answer is not None:
                self._write(*answer, head=False)
                self.on_response_complete()
                return
            # The application's path after all, as if the request had just been parsed.
            self._start_cycle()
            self.cycle.body = body
            if self._last:
                self.cycle.keep_alive = False
        super().on_message_complete()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown closes an idle connection at once and lets a request
        being answered finish; an introspection whose body is being collected here has no
        cycle of its own yet, but is a request being answered all the same."""
        if self._form is not None:
            self._last = True
            return
        super().shutdown()

    def _free(self) -> bool:
        """Whether a request may be answered here: nothing of the connection's is still being
        answered (pipelining keeps its order), its client reads its answers (one that does
        not is served by the application's path, which waits for it, so answers cannot pile
        up here, and then let go: `_not_reading`), HTTP/1.1, no upgrade."""
        return not self.pipeline and not self.flow.write_paused \
            and (self.cycle is None or self.cycle.response_complete) \
            and self.parser.get_http_version() == "1.1" and not self.parser.should_upgrade() \
            and b"#" not in self.url

    def _has_body(self) -> bool:
        for name, value in self.headers:
            if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                return True
        return False

    def _small_body(self) -> bool:
        """A `POST` with a body of a stated length of at most `MAX_BODY`, not waiting for a
        `100 Continue`."""
        if self.parser.get_method() != b"POST" or self.expect_100_continue:
            return False
        length = None
        for name, value in self.headers:
            if name == b"transfer-encoding" or (name == b"content-length" and length is not None):
                return False
            if name == b"content-length":
                length = value
        return length is not None and length.isdigit() and int(length) <= MAX_BODY

    def _answer_check(self, method: str, url: bytes) -> bool:
        """Answer a gateway check that needs no I/O, here and now (see the module's doc)."""
        answer = self._observed.quick_check(method, url[len(_CHECK_QUERY):], self.headers)
        if answer is None:
            return False
        self._write(*answer, head=method == "HEAD")
        return True

    def _write(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *,
               head: bool) -> None:
        """An answer, as uvicorn writes one (its default headers first)."""
        keep_alive = self.parser.should_keep_alive() and not self._last
        content = [STATUS_LINE[status]]
        for name, value in (*self.server_state.default_headers, *headers):
            content += (name, b": ", value, b"\r\n")
        if not keep_alive:
            content.append(b"connection: close\r\n")
        content.append(b"\r\n")
        if not head:
            content.append(body)
        self.transport.write(b"".join(content))
        if not keep_alive:
            self.transport.close()
