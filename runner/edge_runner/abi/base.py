"""The one interface every ABI executor implements, and what they share.

The data plane builds an :class:`HttpRequest` once (after routing and reading
the body) and the pool hands it to the function's :class:`AbiExecutor`:
``encode`` turns it into what the ABI's guest takes (on the event loop),
``instantiate`` creates an :class:`Instance`, whose ``invoke`` runs one request
and returns a :data:`Response` or raises an
:class:`~edge_runner.errors.InvocationError`.  How many instances exist, when
they are reused and on which thread they run is the pool's business
(:mod:`edge_runner.invoke.pool`); what the guest sees and how its answer is
checked is the executor's.

Shared by the executors: the sandbox (:func:`make_wasi`, or :func:`wasi_recipe`
built once per function), the response checks
(:func:`check_response`) and the speculative budget of a call on the event loop
(:class:`Speculation`, :class:`BudgetExceeded`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Protocol

import wasmtime

from edge_api.models import EdgeFunctionSpec
from edge_runner.errors import GuestFailure
from edge_runner.wasm import capi
from edge_runner.wasm.engine import CompiledModule, WasmEngine

#: ``(status, headers, body)``; header names lower-case bytes.
Response = tuple[int, list[tuple[bytes, bytes]], bytes]


@dataclass(slots=True)
class HttpRequest:
    """One routed request, as every ABI may need it; never changed once built.

    Not ``frozen``: a frozen dataclass sets each field through
    ``object.__setattr__``, 1.7 us per request against 0.4 us.
    """

    #: As guests see it: ``HEAD`` becomes ``GET`` (the body is dropped on the way out).
    method: str
    #: Percent-decoded path, and the raw path (still percent-encoded, no query), both
    #: normalized by http/paths.py.
    path: str
    raw_path: bytes
    #: Raw query string without ``?``.
    query: bytes
    #: Lower-case names; hop-by-hop headers removed, ``x-request-id`` set.
    headers: list[tuple[bytes, bytes]]
    body: bytes
    host: str
    scheme: str
    client: str
    server_port: int
    #: The matched rule's path and the Template captures.
    route_path: str
    params: tuple[tuple[str, str], ...]
    request_id: str


class BudgetExceeded(Exception):
    """A speculative call ran out of its small budget; rerun it elsewhere."""

    def __init__(self, *, by_time: bool) -> None:
        super().__init__("speculative budget exceeded")
        #: Its time cap stopped it (not fuel): never before the cap really passed
        #: (:mod:`edge_runner.wasm.deadline`).
        self.by_time = by_time


@dataclass(frozen=True, slots=True)
class Speculation:
    """The small budget of a speculative run on the event loop (see invoke.policy.InlinePolicy).

    Both bounds matter: fuel counts instructions, but a guest calling cheap-fuel,
    expensive host functions (the WASI clock, random bytes) could use little fuel for
    a long time, so the epoch deadline is shortened too.
    """

    fuel: int
    ticks: int
    #: The time cap in seconds (``ticks`` is its epoch deadline).
    seconds: float


class Instance(Protocol):
    """A live instance (or, for per-request ABIs, the recipe of one); discard it
    after any failure.  Used by one thread at a time."""

    #: Requests it ran; bytes of the memory budget it holds (set by the pool);
    #: when it was parked idle.
    served: int
    reserved: int
    idle_since: float

    def invoke(
        self, payload: object, request_id: str, *, speculation: Speculation | None = None,
        spent: float = 0.0,
    ) -> Response:
        """Run one request.  ``speculation`` caps the call below the function's own
        limits (raise :class:`BudgetExceeded` when it runs out); ``spent`` is wall
        time an earlier speculative attempt used, taken off the deadline."""

    def memory_bytes(self) -> int:
        """Linear memory it holds now (what an idle instance keeps reserved)."""

    def renew(self) -> bool:
        """Make it as new for another request (``pool.reuse: false``); False if it
        cannot be, and raises if that failed (then discard it)."""

    def close(self) -> None:
        """Free its store and memory now; unusable after."""


class AbiExecutor(Protocol):
    """One ABI: how a request reaches a guest and how its answer comes back."""

    #: The ``spec.abi`` value it serves.
    abi: str
    #: Instances may serve many requests (then ``pool.reuse`` decides); False: a
    #: fresh instance per request.
    reusable: bool
    #: Calls may run speculatively on the event loop under a :class:`Speculation`;
    #: False: always on a worker thread.
    inline: bool
    #: Creating an instance is timed as a cold start (False: creation happens inside
    #: ``invoke`` and is counted, not timed).
    timed_start: bool

    def encode(self, request: HttpRequest) -> object:
        """What ``Instance.invoke`` takes for this request (runs on the event loop)."""

    def instantiate(
        self, engine: WasmEngine, compiled: CompiledModule, name: str, spec: EdgeFunctionSpec,
        *, speculation: Speculation | None, request_id: str, renew: bool = False,
    ) -> Instance:
        """A new instance; raises InvocationError (or BudgetExceeded under ``speculation``).
        ``renew``: the pool will ask it to :meth:`Instance.renew` after each request."""


def make_wasi(spec: EdgeFunctionSpec, argv0: str) -> wasmtime.WasiConfig:
    """The whole sandbox a guest sees (docs/abi.md).

    Only ``spec.env`` (never the runner's environment), ``argv`` = the function
    name, no preopened directories (so no path resolves and no file opens), no
    sockets (WASI preview 1 can only use inherited socket fds, and there are
    none), empty stdin.  ``fd_write`` to stdout/stderr goes to the store's
    :class:`~edge_runner.wasm.wasi_output.Streams` and ``poll_oneoff`` is refused,
    both by the engine's linker (:mod:`edge_runner.wasm.engine`).
    """
    wasi = wasmtime.WasiConfig()
    wasi.argv = [argv0]
    wasi.env = [(e.name, e.value) for e in spec.env]
    return wasi


def wasi_recipe(spec: EdgeFunctionSpec, argv0: str) -> capi.WasiRecipe:
    """:func:`make_wasi`'s sandbox as a :class:`~edge_runner.wasm.capi.WasiRecipe`, built
    once per ``argv0`` and env (an edge instance per request applies it to its store)."""
    return _recipe(argv0, tuple((e.name, e.value) for e in spec.env))


@functools.lru_cache(maxsize=1024)
def _recipe(argv0: str, env: tuple[tuple[str, str], ...]) -> capi.WasiRecipe:
    return capi.WasiRecipe([argv0], list(env))


#: Response headers a guest may return; more is a malformed response (the host
#: decodes and forwards each one, so this bounds its work per response).
MAX_RESPONSE_HEADERS = 256
#: Total bytes of a guest's response header names and values (like a proxy's
#: response-head buffer); more is a malformed response (502).
MAX_RESPONSE_HEADER_BYTES = 64 * 1024
# Response header syntax (RFC 9110 token; no control characters but HTAB in values).
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9a-z]+$")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def check_response(response: Response) -> Response:
    """Raise ``bad_response`` for what HTTP cannot carry; shared by every ABI.

    An informational status as the final answer, too many headers, a header
    name that is not a lower-case token, or a value with a control character
    (response splitting) would otherwise break the connection mid-response.
    """
    status, headers, _ = response
    if status < 200:
        raise GuestFailure("bad_response", f"status {status} is not a final response")
    if len(headers) > MAX_RESPONSE_HEADERS:
        raise GuestFailure("bad_response", f"response has more than {MAX_RESPONSE_HEADERS} headers")
    total = 0
    for name, value in headers:
        if not _TOKEN.match(name) or _BAD_VALUE.search(value):
            raise GuestFailure("bad_response", f"invalid response header {name[:40]!r}")
        total += len(name) + len(value)
    if total > MAX_RESPONSE_HEADER_BYTES:
        raise GuestFailure("bad_response", f"response headers total {total} bytes, over"
                           f" {MAX_RESPONSE_HEADER_BYTES}")
    return response
