"""Hostile clients at the HTTP layer: request-head limits and read deadlines.

uvicorn's httptools protocol bounds neither the size nor the number of request
headers (llhttp has no limit of its own, and httptools buffers a header value
until it ends), and it has no deadline for a client to finish sending a
request: only idle keep-alive connections time out.  :func:`guarded_protocol`
returns a subclass, used by :mod:`edge_runner.server` for both ports, adding:

* ``max_head_bytes``: bytes of the request line plus headers, counted as they
  arrive (so a never-ending header is cut off, not buffered); over it the
  client gets 431 and the connection is closed;
* ``max_headers``: number of header fields; over it, 431 and close;
* ``head_timeout``: a connection must deliver a complete request head within
  this many seconds of opening (or of the first byte of its next request on a
  keep-alive connection); else 408 and close: a slowloris client holds one
  socket for at most this long, never a worker;
* ``body_timeout``: seconds from the end of the head to the end of the body
  (a slow upload, or a body shorter than its ``Content-Length``); else 408,
  close, and the data plane sees a disconnect and never runs the guest.

A body longer than its ``Content-Length`` needs nothing: the extra bytes are
parsed as the next request, which is malformed (400, close).  The number of
open connections is bounded by uvicorn's ``limit_concurrency`` (503).  Errors
are problem+json like every other error of the runner.
"""

from __future__ import annotations

import asyncio
import http
import random
from dataclasses import dataclass
from typing import Any, ClassVar

from mypy_extensions import mypyc_attr
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from edge_runner.http.problems import problem


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Per-connection limits against hostile clients (defaults: :mod:`edge_runner.settings`)."""

    #: Request line + headers, bytes.
    max_head_bytes: int
    #: Header fields per request.
    max_headers: int
    #: Seconds to receive a complete request head.
    head_timeout: float
    #: Seconds to receive a request body once the head is complete.
    body_timeout: float


#: uvicorn's status lines (``HTTP/1.1 200 OK\r\n``), also for the fast path's writer.
STATUS_LINES: dict[int, bytes] = STATUS_LINE
_SLUGS = {400: "bad-request", 408: "request-timeout", 431: "headers-too-large"}


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a refused request."""


@mypyc_attr(allow_interpreted_subclasses=True)  # guarded_protocol subclasses it
class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`HttpLimits` (see the module docstring)."""

    limits: ClassVar[HttpLimits]  # set by guarded_protocol

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        #: A request line has begun and its head is not complete yet.
        self._head_open = False
        self._body_pending = False
        self._refusal: tuple[int, str] | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # -- connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # The head timer of a request on a keep-alive connection runs from its first
        # byte, but is only armed if its head is still incomplete once this chunk is
        # parsed: most heads arrive whole, and need no timer at all.
        arrived = 0.0
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_timer is None:  # first bytes of the next request on keep-alive
                arrived = self.loop.time()
        super().data_received(data)
        if self._in_head:
            if self._head_bytes > self.limits.max_head_bytes:
                self._reply_and_close(
                    431, f"the request head is over {self.limits.max_head_bytes} bytes"
                )
            elif (self._head_open or self._head_bytes) and self._head_timer is None \
                    and not self.transport.is_closing():
                self._head_timer = self.loop.call_at(
                    (arrived or self.loop.time()) + self.limits.head_timeout,
                    self._head_expired,
                )
        elif self._body_pending and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_expired)

    # -- parser callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._head_open = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        limits = self.limits
        if len(self.headers) > limits.max_headers:
            self._refusal = (431, f"more than {limits.max_headers} request headers")
            raise _Refused
        # The byte count may include body bytes that came with the head: count exactly.
        if self._head_bytes > limits.max_head_bytes and _head_size(self) > limits.max_head_bytes:
            self._refusal = (431, f"the request head is over {limits.max_head_bytes} bytes")
            raise _Refused
        self._in_head = False
        self._head_open = False
        self._head_bytes = 0
        self._body_pending = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_done()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._body_pending = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._message_done()

    def _head_done(self) -> None:
        """A request head passed the limits: hand it on (uvicorn starts the ASGI call)."""
        super().on_headers_complete()

    def _message_done(self) -> None:
        """The request (head and body) is complete: tell the ASGI call."""
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:
            self._reply_and_close(*self._refusal)
        else:
            self._reply_and_close(400, msg)

    # -- limits ----------------------------------------------------------------------

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._head_bytes or self._head_open:
            self._reply_and_close(
                408, f"the request head did not arrive within {self.limits.head_timeout}s"
            )
        elif not self.transport.is_closing():
            self.transport.close()

    def _body_expired(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            # The app sees a disconnect on its next receive() and its sends go nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
            self._reply_and_close(
                408, f"the request body did not arrive within {self.limits.body_timeout}s"
            )
        elif not self.transport.is_closing():
            self.transport.close()

    def _reply_and_close(self, status: int, detail: str) -> None:
        self._cancel_timers()
        if self.transport.is_closing():
            return
        request_id = f"{random.getrandbits(96):024x}"
        _, headers, body = problem(
            status, _SLUGS[status], http.HTTPStatus(status).phrase, detail, request_id
        )
        head = [STATUS_LINE[status]]
        head += [name + b": " + value + b"\r\n" for name, value in headers]
        head.append(b"x-request-id: " + request_id.encode() + b"\r\n")
        head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None


def _head_size(protocol: HttpToolsProtocol) -> int:
    return len(protocol.url) + sum(len(n) + len(v) + 4 for n, v in protocol.headers)


def guarded_protocol(limits: HttpLimits) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` enforcing ``limits``."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})
