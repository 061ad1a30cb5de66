"""What the fresh-instance ABIs share: an executor whose instances live for one request.

``wagi`` and ``wasi-http`` create, run and free a store inside each call; all
that differs between them is the function that does it (``run_wagi``,
``run_wasi_http``).  :class:`FreshExecutor` wraps such a function in the
:class:`~edge_runner.abi.base.AbiExecutor` interface: the request goes to the
run unchanged, never reused, never inline, never timed as a cold start (the
instance is created inside ``invoke``), and :class:`FreshRun` is the
:class:`~edge_runner.abi.base.Instance` the pool holds meanwhile.
"""

from __future__ import annotations

import typing

from edge_api.models import EdgeFunctionSpec
from edge_runner.abi.base import HttpRequest, Response, Speculation
from edge_runner.wasm.engine import CompiledModule, WasmEngine


class RunOnce(typing.Protocol):
    """Instantiate ``compiled``, run ``request`` in it, free it, return the response."""

    def __call__(
        self, *, engine: WasmEngine, compiled: CompiledModule, name: str,
        spec: EdgeFunctionSpec, request: HttpRequest, request_id: str,
    ) -> Response: ...


class FreshRun:
    """One request's instance: created, run and freed inside :meth:`invoke`."""

    __slots__ = (
        "_compiled", "_engine", "_name", "_run", "_spec", "idle_since", "reserved", "served",
    )

    def __init__(
        self, run: RunOnce, engine: WasmEngine, compiled: CompiledModule, name: str,
        spec: EdgeFunctionSpec,
    ) -> None:
        self._run = run
        self._engine = engine
        self._compiled = compiled
        self._name = name
        self._spec = spec
        self.served = 0
        self.reserved = 0
        self.idle_since = 0.0

    def invoke(
        self, payload: object, request_id: str, *, speculation: Speculation | None = None,
        spent: float = 0.0,
    ) -> Response:
        self.served += 1
        return self._run(
            engine=self._engine, compiled=self._compiled, name=self._name, spec=self._spec,
            request=typing.cast(HttpRequest, payload), request_id=request_id,
        )

    def memory_bytes(self) -> int:
        return 0  # its store lives only inside invoke

    def renew(self) -> bool:
        return False  # each invoke makes its own instance

    def close(self) -> None:
        pass


class FreshExecutor:
    """An ABI with a fresh instance per request, always on a worker thread."""

    reusable = False
    inline = False
    timed_start = False

    def __init__(self, abi: str, run: RunOnce) -> None:
        self.abi = abi
        self._run = run

    def encode(self, request: HttpRequest) -> HttpRequest:
        return request  # whatever the guest takes is built on the worker thread, by the run

    def instantiate(
        self, engine: WasmEngine, compiled: CompiledModule, name: str, spec: EdgeFunctionSpec,
        *, speculation: Speculation | None, request_id: str, renew: bool = False,
    ) -> FreshRun:
        return FreshRun(self._run, engine, compiled, name, spec)
