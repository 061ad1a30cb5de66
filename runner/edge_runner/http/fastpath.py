"""The data port's HTTP protocol: answers most requests without an ASGI call.

uvicorn runs every request as an ASGI call: an asyncio task, a receive and a
send coroutine, message dictionaries, an event per body chunk.  For the data
plane that machinery costs more than the guest (bench/throughput.py).  Most
requests need none of it: a request without a body, routed to a function that
runs inline (:meth:`~edge_runner.invoke.pool.FunctionRuntime.invoke_now`), or
answered by the runner itself (404, 405, 401/403, 503), is decided on the
stack that parsed it.  :class:`FastPathProtocol` (the guard's protocol,
:mod:`edge_runner.http.guard`, with every hostile-client limit) asks
:meth:`DataPlane.answer_now <edge_runner.http.dataplane.DataPlane.answer_now>`
when a request head is complete, and writes the answer straight to the
transport.  Everything else goes uvicorn's way, unchanged, continuing from what
``answer_now`` already did: requests with a body, calls that need a worker
thread or must queue, pipelined requests behind one in flight, a client that
does not read its answers (the transport's write buffer is full), upgrades,
and connections over ``limit_concurrency``.  Responses are identical either
way (tests compare them byte for byte).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Callable, MutableMapping
from typing import Any, ClassVar

import httptools
from mypy_extensions import mypyc_attr

from edge_runner.http.guard import STATUS_LINES, GuardedHttpToolsProtocol, HttpLimits
from edge_runner.http.problems import Problem

#: Bytes of waiting answers that are written at once instead of at the end of the turn.
FLUSH_AT = 64 * 1024
#: ``DataPlane.answer_now``: the complete response, or None to go the ASGI way.
Answer = Callable[[MutableMapping[str, Any]], Problem | None]


@mypyc_attr(allow_interpreted_subclasses=True)  # fast_path_protocol subclasses it
class FastPathProtocol(GuardedHttpToolsProtocol):
    """The guarded protocol plus synchronous answers (see the module docstring)."""

    answer: ClassVar[Answer]  # set by fast_path_protocol

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The request being parsed was answered already: its completion is ours.
        self._answered = False
        #: Answers written at the end of this turn of the event loop (see _write).
        self._outgoing: list[bytes] = []
        self._outgoing_bytes = 0
        self._close_after_flush = False
        #: Loop time the connection went idle (its last answer complete, no byte since),
        #: or None while a request is in progress; see :meth:`_idle_check`.
        self._idle_since: float | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        # uvicorn types it int; the runner's setting is float seconds, and compiled
        # (setup.py) an int-typed read of a float would raise.
        uvicorn_state: Any = self
        self._keep_alive: float = uvicorn_state.timeout_keep_alive

    # -- keep-alive, armed lazily ----------------------------------------------------
    # uvicorn arms a keep-alive timer after every answer and cancels it when the next
    # request arrives (a timer created and cancelled per request, 1.8 us).  Here one
    # timer per connection fires at most once per keep-alive period and re-arms itself
    # if the connection was busy meanwhile: the same deadline for an idle connection.

    def data_received(self, data: bytes) -> None:
        self._idle_since = None
        super().data_received(data)

    def on_response_complete(self) -> None:
        """uvicorn's, except that the keep-alive timer is armed lazily."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = now = self.loop.time()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_at(now + self._keep_alive,
                                                 self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        since = self._idle_since
        if since is None:
            return  # a request in progress: its answer arms the timer again
        due = since + self._keep_alive
        if self.loop.time() >= due:
            self.timeout_keep_alive_handler()
        else:
            self._idle_timer = self.loop.call_at(due, self._idle_check)

    def _cancel_timers(self) -> None:  # the guard's, on connection lost or closing
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        super()._cancel_timers()

    # -- the fast path -----------------------------------------------------------------

    def _head_done(self) -> None:
        if self._may_answer():
            response = self._answer_now()
            if response is not None:
                self._answered = True
                self._write(response)
                return
            # The ASGI call continues from what answer_now did (scope carries it);
            # uvicorn re-derives the path from the URL, so keep the normalized one.
            path, raw_path = self.scope["path"], self.scope["raw_path"]
            self._unset_keepalive_if_required()  # armed by an answer earlier in this chunk
            super()._head_done()
            self.scope["path"], self.scope["raw_path"] = path, raw_path
            return
        self._unset_keepalive_if_required()
        super()._head_done()

    def _message_done(self) -> None:
        if self._answered:
            self._answered = False
            return
        super()._message_done()

    def _may_answer(self) -> bool:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return False  # pipelined behind a request in flight: keep the order
        if self.pipeline or self.flow.write_paused or self.parser.should_upgrade():
            return False
        limit = self.limit_concurrency
        return limit is None or (len(self.connections) < limit and len(self.tasks) < limit)

    def _answer_now(self) -> Problem | None:
        """Complete the scope as uvicorn does, then ask the data plane."""
        parser = self.parser
        scope: MutableMapping[str, Any] = self.scope  # type: ignore[assignment]
        scope["method"] = parser.get_method().decode("ascii")
        version = parser.get_http_version()
        if version != "1.1":
            scope["http_version"] = version
        parsed: Any = httptools.parse_url(self.url)  # its stub says bytes; query may be None
        raw_path = parsed.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = parsed.query or b""
        return type(self).answer(scope)

    def _write(self, response: Problem) -> None:
        """Write a complete response; the same bytes uvicorn would write for it.

        Header names and values need no check here: guests' were checked by
        :func:`edge_runner.abi.base.check_response`, the runner's own are constants.
        """
        status, headers, body = response
        keep_alive = self.scope["http_version"] != "1.0" and self.parser.should_keep_alive()
        head = [STATUS_LINES[status]]
        closing = False
        for name, value in headers:
            if name == b"connection" and b"close" in value.lower():
                keep_alive = False
                closing = True
            head += (name, b": ", value, b"\r\n")
        if not keep_alive and not closing:
            head.append(b"connection: close\r\n")
        head += (b"\r\n", body)
        # Sent at the end of this turn of the event loop, not now: the answers to every
        # request read in this turn leave together, and the client is woken once for
        # them rather than once per answer (about 10% more requests per second).  A
        # large answer goes at once, so a client that does not read pauses the
        # transport (and so the fast path) as it would otherwise.
        data = b"".join(head)
        if not self._outgoing:
            self.loop.call_soon(self._flush)
        self._outgoing.append(data)
        self._outgoing_bytes += len(data)
        self._close_after_flush = self._close_after_flush or not keep_alive
        if self._outgoing_bytes >= FLUSH_AT:
            self._flush()
        self.on_response_complete()

    def _flush(self) -> None:
        """Write the answers waiting (in order), then close if one of them said so."""
        self._send_waiting()
        if self._close_after_flush:
            self.transport.close()

    def _send_waiting(self) -> None:
        outgoing = self._outgoing
        if outgoing:
            self._outgoing = []
            self._outgoing_bytes = 0
            transport = self.transport
            if not transport.is_closing():
                transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))

    def shutdown(self) -> None:
        self._flush()  # answers already decided are sent before the connection closes
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        self._send_waiting()  # answers to the requests before the bad one go first
        super().send_400_response(msg)

    def _reply_and_close(self, status: int, detail: str) -> None:
        self._send_waiting()
        super()._reply_and_close(status, detail)


def fast_path_protocol(limits: HttpLimits, answer: Answer) -> type[FastPathProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)``: ``limits``, and ``answer``."""
    return type("FastPathProtocol", (FastPathProtocol,),
                {"limits": limits, "answer": staticmethod(answer)})
