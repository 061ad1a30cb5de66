"""The host side of ``wasi:http/types`` and the ``wasi:io`` it needs, for one request.

Used by :mod:`edge_runner.abi.wasihttp` (the ``wasi-http`` executor).  wasmtime-py's
C API has no way to create the host side of an incoming request, so the runner
implements the resources itself: each is a Python object in the request's
:class:`RequestState` table, handed to the guest as a host resource whose
``rep`` is its table key.  Host functions find the request through a
thread-local (:func:`current`): a request runs on one thread from
instantiation to the end of ``handle``.

Everything is in memory: the request body is a bytes object the guest reads
through an ``input-stream``; the response body collects in a list, bounded by
``maxResponseBytes``.  Pollables are always ready (nothing here ever waits), so
a guest cannot sleep in the host, where no time limit could stop it.

How wasmtime-py represents values depends on the guest's declared types
(``Variant`` only where cases would be ambiguous); the shapes below follow the
standard WIT of ``wasi:http@0.2.x``.
"""

from __future__ import annotations

import re
import threading
import typing
from dataclasses import dataclass, field

from wasmtime.component import Variant

from edge_runner.abi.base import HttpRequest
from edge_runner.errors import GuestFailure
from edge_runner.wasm.capi import HostHandle
from edge_runner.wasm.guest_output import GuestOutput

#: Host resource type ids (any distinct integers; wasmtime compares them).
FIELDS, INCOMING_REQUEST, INCOMING_BODY, FUTURE_TRAILERS = 1, 2, 3, 4
OUTGOING_RESPONSE, OUTGOING_BODY, RESPONSE_OUTPARAM = 5, 6, 7
OUTGOING_REQUEST, REQUEST_OPTIONS, FUTURE_INCOMING_RESPONSE, INCOMING_RESPONSE = 8, 9, 10, 11
INPUT_STREAM, OUTPUT_STREAM, POLLABLE, IO_ERROR = 12, 13, 14, 15
NETWORK: int = 16
TERMINAL_INPUT: int = 17
TERMINAL_OUTPUT: int = 18

#: Largest single read or write chunk the host hands over (and reports in check-write).
CHUNK = 1 << 20
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_METHODS = ("get", "head", "post", "put", "delete", "connect", "options", "trace", "patch")


class GuestAbort(Exception):
    """Raised inside a host function to stop the guest; the request fails with ``failure``."""


@dataclass
class Fields:
    entries: list[tuple[str, bytes]] = field(default_factory=list)
    immutable: bool = False


@dataclass
class InputStream:
    data: bytes | memoryview
    pos: int = 0


@dataclass
class OutputStream:
    #: Where writes go: the response body, or the guest's log (stdout/stderr).
    body: ResponseBody | None = None
    log: GuestOutput | None = None


@dataclass
class ResponseBody:
    limit: int
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    stream_taken: bool = False
    finished: bool = False


@dataclass
class OutgoingResponse:
    headers: Fields
    status: int = 200
    body: ResponseBody | None = None


@dataclass
class IncomingBody:
    data: bytes
    stream_taken: bool = False


@dataclass
class OutgoingRequest:
    headers: Fields
    method: Variant = field(default_factory=lambda: Variant("get"))
    path_with_query: str | None = None
    scheme: Variant | None = None
    authority: str | None = None


class Plain:
    """A resource with no state of its own (pollable, network, options, trailers...)."""


class RequestState:
    """One request's resources, its answer and why it failed, if it did."""

    def __init__(
        self, request: HttpRequest, *, env: list[tuple[str, str]], max_response: int,
        log: GuestOutput,
    ) -> None:
        self.request = request
        self.env = env
        self.max_response = max_response
        self.log = log
        self.table: dict[int, object] = {}
        self._next = 1
        self.consumed = False
        self.outparam_used = False
        self.response: OutgoingResponse | None = None
        self.error_code: str | None = None
        self.failure: GuestFailure | None = None

    def new(self, obj: object, kind: int) -> HostHandle:
        rep = self._next
        self._next += 1
        self.table[rep] = obj
        return HostHandle(rep, kind)

    def get(self, _store: object, rep: int) -> typing.Any:
        try:
            return self.table[rep]
        except KeyError:
            raise self.abort(
                GuestFailure("trap", "the function used a resource it dropped")) from None

    def take(self, _store: object, rep: int) -> typing.Any:
        """Like :meth:`get` for an ``own`` parameter: the host now owns it."""
        return self.table.pop(rep, None)

    def drop(self, rep: int) -> None:
        self.table.pop(rep, None)

    def abort(self, failure: GuestFailure) -> GuestAbort:
        """Remember ``failure`` (first one wins) and return the exception that stops the guest."""
        if self.failure is None:
            self.failure = failure
        return GuestAbort(failure.detail)


_local = threading.local()


def current() -> RequestState:
    state: RequestState | None = getattr(_local, "state", None)
    if state is None:
        raise RuntimeError("wasi-http host function called outside a request")
    return state


def bind(state: RequestState | None) -> None:
    """Make ``state`` the request of host calls on this thread (None: no request)."""
    _local.state = state


def drop_resource(_store: object, rep: int) -> None:
    state: RequestState | None = getattr(_local, "state", None)
    if state is not None:
        state.drop(rep)


# ---- wasi:io -------------------------------------------------------------------------


def _read(store: object, this: int, length: int) -> bytes | None:
    stream: InputStream = current().get(store, this)
    if stream.pos >= len(stream.data):
        return None  # stream-error.closed
    end = stream.pos + min(length, CHUNK)
    chunk = bytes(stream.data[stream.pos:end])
    stream.pos = min(end, len(stream.data))
    return chunk


def _skip(store: object, this: int, length: int) -> int | None:
    chunk = _read(store, this, length)
    return None if chunk is None else len(chunk)


def write_chunk(state: RequestState, stream: OutputStream, data: bytes) -> None:
    if stream.log is not None:
        room = stream.log.room()
        stream.log.write(data[:room], len(data))
        return
    body = stream.body
    if body is None or body.finished:
        raise state.abort(GuestFailure("bad_response", "write to a finished response body"))
    body.size += len(data)
    if body.size > body.limit:
        raise state.abort(GuestFailure(
            "response_too_large",
            f"response body over maxResponseBytes ({body.limit})",
        ))
    body.chunks.append(data)


def _write(store: object, this: int, contents: bytes) -> Variant:
    state = current()
    write_chunk(state, state.get(store, this), contents)
    return Variant("ok")


def _check_write(store: object, this: int) -> int:
    current().get(store, this)
    return CHUNK


def _no_op_ok(store: object, this: int) -> Variant:
    current().get(store, this)
    return Variant("ok")


def _write_zeroes(store: object, this: int, length: int) -> Variant:
    state = current()
    if length > CHUNK:
        raise state.abort(GuestFailure("bad_response", "write-zeroes over the chunk size"))
    write_chunk(state, state.get(store, this), bytes(length))
    return Variant("ok")


def _splice(store: object, this: int, src: int, length: int) -> int | None:
    state = current()
    chunk = _read(store, src, length)
    if chunk is None:
        return None
    write_chunk(state, state.get(store, this), chunk)
    return len(chunk)


def _subscribe(store: object, this: int) -> HostHandle:
    state = current()
    state.get(store, this)
    return state.new(Plain(), POLLABLE)


def _ready(store: object, this: int) -> bool:
    current().get(store, this)
    return True


def _block(store: object, this: int) -> None:
    current().get(store, this)


def _poll(_store: object, pollables: list[int]) -> list[int]:
    return list(range(len(pollables)))


def _debug_string(_store: object, _this: int) -> str:
    return "error"


IO: dict[str, tuple[dict[str, int], dict[str, typing.Callable[..., typing.Any]]]] = {
    "wasi:io/error@0.2.0": (
        {"error": IO_ERROR}, {"[method]error.to-debug-string": _debug_string},
    ),
    "wasi:io/poll@0.2.0": (
        {"pollable": POLLABLE},
        {"[method]pollable.ready": _ready, "[method]pollable.block": _block, "poll": _poll},
    ),
    "wasi:io/streams@0.2.0": (
        {"input-stream": INPUT_STREAM, "output-stream": OUTPUT_STREAM},
        {
            "[method]input-stream.read": _read,
            "[method]input-stream.blocking-read": _read,
            "[method]input-stream.skip": _skip,
            "[method]input-stream.blocking-skip": _skip,
            "[method]input-stream.subscribe": _subscribe,
            "[method]output-stream.check-write": _check_write,
            "[method]output-stream.write": _write,
            "[method]output-stream.blocking-write-and-flush": _write,
            "[method]output-stream.flush": _no_op_ok,
            "[method]output-stream.blocking-flush": _no_op_ok,
            "[method]output-stream.subscribe": _subscribe,
            "[method]output-stream.write-zeroes": _write_zeroes,
            "[method]output-stream.blocking-write-zeroes-and-flush": _write_zeroes,
            "[method]output-stream.splice": _splice,
            "[method]output-stream.blocking-splice": _splice,
        },
    ),
}


# ---- wasi:http/types -----------------------------------------------------------------


def _bad_name(name: str) -> bool:
    return not _TOKEN.match(name)


def _fields_new(_store: object) -> HostHandle:
    return current().new(Fields(), FIELDS)


def fields_from_list(_store: object, entries: list[tuple[str, bytes]]) -> object:
    for name, value in entries:
        if _bad_name(name) or _BAD_VALUE.search(value):
            return Variant("invalid-syntax")
    return current().new(Fields([(n.lower(), bytes(v)) for n, v in entries]), FIELDS)


def _fields_get(store: object, this: int, name: str) -> list[bytes]:
    fields: Fields = current().get(store, this)
    key = name.lower()
    return [v for n, v in fields.entries if n == key]


def _fields_has(store: object, this: int, name: str) -> bool:
    return bool(_fields_get(store, this, name))


def set_entries(fields: Fields, name: str, values: list[bytes]) -> Variant | None:
    """``fields.set`` on the object: None when done, else the ``header-error``."""
    if fields.immutable:
        return Variant("immutable")
    if _bad_name(name) or any(_BAD_VALUE.search(v) for v in values):
        return Variant("invalid-syntax")
    key = name.lower()
    fields.entries = [(n, v) for n, v in fields.entries if n != key]
    fields.entries.extend((key, bytes(v)) for v in values)
    return None


def append_entry(fields: Fields, name: str, value: bytes) -> Variant | None:
    """``fields.append`` on the object: None when done, else the ``header-error``."""
    if fields.immutable:
        return Variant("immutable")
    if _bad_name(name) or _BAD_VALUE.search(value):
        return Variant("invalid-syntax")
    fields.entries.append((name.lower(), bytes(value)))
    return None


def _fields_set(store: object, this: int, name: str, values: list[bytes]) -> object:
    return set_entries(current().get(store, this), name, values)


def _fields_delete(store: object, this: int, name: str) -> object:
    fields: Fields = current().get(store, this)
    if fields.immutable:
        return Variant("immutable")
    return set_entries(fields, name, [])


def _fields_append(store: object, this: int, name: str, value: bytes) -> object:
    return append_entry(current().get(store, this), name, value)


def _fields_entries(store: object, this: int) -> list[tuple[str, bytes]]:
    fields: Fields = current().get(store, this)
    return list(fields.entries)


def _fields_clone(store: object, this: int) -> HostHandle:
    state = current()
    fields: Fields = state.get(store, this)
    return state.new(Fields(list(fields.entries)), FIELDS)


def _method(request: HttpRequest) -> Variant:
    lower = request.method.lower()
    return Variant(lower) if lower in _METHODS else Variant("other", request.method)


def _request_method(store: object, this: int) -> Variant:
    state = current()
    state.get(store, this)
    return _method(state.request)


def _request_path(store: object, this: int) -> str:
    state = current()
    state.get(store, this)
    request = state.request
    path = request.raw_path.decode("latin-1")
    return f"{path}?{request.query.decode('latin-1')}" if request.query else path


def _request_scheme(store: object, this: int) -> Variant:
    state = current()
    state.get(store, this)
    return Variant("HTTPS") if state.request.scheme == "https" else Variant("HTTP")


def _request_authority(store: object, this: int) -> str:
    state = current()
    state.get(store, this)
    return state.request.host


def _request_headers(store: object, this: int) -> HostHandle:
    state = current()
    state.get(store, this)
    entries = [(n.decode("latin-1"), v) for n, v in state.request.headers]
    return state.new(Fields(entries, immutable=True), FIELDS)


def _request_consume(store: object, this: int) -> HostHandle | None:
    state = current()
    state.get(store, this)
    if state.consumed:
        return None
    state.consumed = True
    return state.new(IncomingBody(state.request.body), INCOMING_BODY)


def _body_stream(store: object, this: int) -> HostHandle | None:
    state = current()
    body: IncomingBody = state.get(store, this)
    if body.stream_taken:
        return None
    body.stream_taken = True
    return state.new(InputStream(memoryview(body.data)), INPUT_STREAM)


def _body_finish(store: object, this: int) -> HostHandle:
    state = current()
    state.take(store, this)
    return state.new(Plain(), FUTURE_TRAILERS)


def _trailers_get(store: object, this: int) -> Variant:
    current().get(store, this)
    return Variant("ok", None)  # some(ok(ok(none))): no trailers


def _response_new(store: object, headers: int) -> HostHandle:
    state = current()
    fields: Fields = state.take(store, headers) or Fields()
    fields.immutable = True
    return state.new(OutgoingResponse(fields), OUTGOING_RESPONSE)


def _response_status(store: object, this: int) -> int:
    response: OutgoingResponse = current().get(store, this)
    return response.status


def _response_set_status(store: object, this: int, status: int) -> Variant:
    response: OutgoingResponse = current().get(store, this)
    if not 200 <= status <= 599:
        return Variant("err")
    response.status = status
    return Variant("ok")


def _response_headers(store: object, this: int) -> HostHandle:
    state = current()
    response: OutgoingResponse = state.get(store, this)
    return state.new(response.headers, FIELDS)  # a child view, immutable like the spec's


def _response_body(store: object, this: int) -> HostHandle | None:
    state = current()
    response: OutgoingResponse = state.get(store, this)
    if response.body is not None:
        return None
    response.body = ResponseBody(state.max_response)
    return state.new(response.body, OUTGOING_BODY)


def _outgoing_body_write(store: object, this: int) -> HostHandle | None:
    state = current()
    body: ResponseBody = state.get(store, this)
    if body.stream_taken:
        return None
    body.stream_taken = True
    return state.new(OutputStream(body=body), OUTPUT_STREAM)


def _outgoing_body_finish(
    store: object, this: int, trailers: int | None
) -> None:
    state = current()
    body: ResponseBody | None = state.take(store, this)
    if trailers is not None:
        state.take(store, trailers)  # trailers are ignored (docs/abi.md)
    if body is not None:
        body.finished = True


def _outparam_set(store: object, param: int, response: object) -> None:
    state = current()
    state.take(store, param)
    if state.outparam_used:
        raise state.abort(GuestFailure("bad_response", "response-outparam set twice"))
    state.outparam_used = True
    if isinstance(response, Variant):
        state.error_code = response.tag
    elif isinstance(response, int):
        state.response = state.take(store, response)


def _http_error_code(_store: object, _err: int) -> None:
    return None


HTTP_TYPES: dict[str, typing.Callable[..., typing.Any]] = {
    "[constructor]fields": _fields_new,
    "[static]fields.from-list": fields_from_list,
    "[method]fields.get": _fields_get,
    "[method]fields.has": _fields_has,
    "[method]fields.set": _fields_set,
    "[method]fields.delete": _fields_delete,
    "[method]fields.append": _fields_append,
    "[method]fields.entries": _fields_entries,
    "[method]fields.clone": _fields_clone,
    "[method]incoming-request.method": _request_method,
    "[method]incoming-request.path-with-query": _request_path,
    "[method]incoming-request.scheme": _request_scheme,
    "[method]incoming-request.authority": _request_authority,
    "[method]incoming-request.headers": _request_headers,
    "[method]incoming-request.consume": _request_consume,
    "[method]incoming-body.stream": _body_stream,
    "[static]incoming-body.finish": _body_finish,
    "[method]future-trailers.subscribe": _subscribe,
    "[method]future-trailers.get": _trailers_get,
    "[constructor]outgoing-response": _response_new,
    "[method]outgoing-response.status-code": _response_status,
    "[method]outgoing-response.set-status-code": _response_set_status,
    "[method]outgoing-response.headers": _response_headers,
    "[method]outgoing-response.body": _response_body,
    "[method]outgoing-body.write": _outgoing_body_write,
    "[static]outgoing-body.finish": _outgoing_body_finish,
    "[static]response-outparam.set": _outparam_set,
    "http-error-code": _http_error_code,
}

HTTP_RESOURCES: dict[str, int] = {
    "fields": FIELDS, "incoming-request": INCOMING_REQUEST, "incoming-body": INCOMING_BODY,
    "future-trailers": FUTURE_TRAILERS, "outgoing-response": OUTGOING_RESPONSE,
    "outgoing-body": OUTGOING_BODY, "response-outparam": RESPONSE_OUTPARAM,
    "outgoing-request": OUTGOING_REQUEST, "request-options": REQUEST_OPTIONS,
    "future-incoming-response": FUTURE_INCOMING_RESPONSE,
    "incoming-response": INCOMING_RESPONSE,
}
