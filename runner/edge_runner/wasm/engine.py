"""The process-lifetime wasmtime engine, its epoch ticker and module compilation.

Three lifetimes, three types (as in Spin): the :class:`WasmEngine` lives as long
as the runner; a :class:`CompiledModule` lives from load until its function is
replaced; a store lives for one instance (see :mod:`edge_runner.abi.edge`).

Time limits use epoch interruption: a ticker (:mod:`edge_runner.wasm.ticker`,
a native timer on Linux) advances the engine epoch every ``tick`` seconds, and
each invocation sets a deadline in ticks, so a call is stopped between
``timeout`` and ``timeout`` + two ticks (plus scheduling noise).  Fuel metering
is on engine-wide; a function without a fuel limit gets an effectively infinite
budget per call.  Memory is capped per store (:meth:`WasmEngine.new_store`);
modules are compiled with a grow probe (:mod:`edge_runner.wasm.growprobe`) so
hitting that cap is known exactly, and, where they allow it, so that an instance
can be renewed instead of made anew (:mod:`edge_runner.wasm.renewal`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import wasmtime
import wasmtime.component

from edge_api.abi import (
    ALLOWED_IMPORT_MODULE,
    COMPONENT_ABIS,
    ModuleRejected,
    check_component,
    check_module,
    compile_component,
    is_component,
)
from edge_runner.wasm import capi, growprobe, wasi_output
from edge_runner.wasm.deadline import Deadline, DeadlineHook
from edge_runner.wasm.modcache import fingerprint
from edge_runner.wasm.renewal import STATELESS_WASI, Restore
from edge_runner.wasm.ticker import start_ticker

log = logging.getLogger("edge_runner.wasm.engine")

UNLIMITED_FUEL = 2**63 - 1
#: Table elements a store may hold (8 bytes each, outside linear memory): a
#: ``table.grow`` bomb gets -1 past this, like ``memory.grow`` at its cap.
MAX_TABLE_ELEMENTS = 100_000

ERRNO_NOTSUP = 58


def _refuse_poll_oneoff(_in: int, _out: int, _count: int, _events: int) -> int:
    return ERRNO_NOTSUP


@dataclass(frozen=True, slots=True)
class CompiledModule:
    digest: str
    size: int
    abi: str
    module: wasmtime.Module
    pre: wasmtime.InstancePre
    has_initialize: bool
    #: Export name of the grow probe global (:mod:`edge_runner.wasm.growprobe`), if any.
    grow_probe: str | None = None
    #: For component ABIs (``wasi-http``): the compiled component.  ``module`` and
    #: ``pre`` are then an empty core module, unused.
    component: wasmtime.component.Component | None = None
    #: Export names of the globals a renewal restores (:mod:`edge_runner.wasm.renewal`);
    #: None: its instances cannot be renewed.
    renewal: tuple[str, ...] | None = None
    #: A renewal also needs a new WASI context (it imports a WASI function with state).
    renew_wasi: bool = False
    #: Its data pages at instantiation, what a renewal writes back (read once).
    restore: Restore = field(default_factory=Restore)

    def serialize(self) -> bytes:
        """The artifact the disk cache keeps (:mod:`.modcache`)."""
        code = self.component if self.component is not None else self.module
        return bytes(code.serialize())


class WasmEngine:
    """One engine, one linker with WASI, one epoch ticker."""

    def __init__(self, *, tick: float = 0.005, max_wasm_stack: int = 512 * 1024) -> None:
        config = wasmtime.Config()
        config.epoch_interruption = True
        config.consume_fuel = True
        config.max_wasm_stack = max_wasm_stack
        self.engine = wasmtime.Engine(config)
        self.linker = wasmtime.Linker(self.engine)
        self.linker.define_wasi()
        # poll_oneoff is WASI's only blocking call (a clock subscription sleeps in the
        # host, where neither fuel nor epochs can stop it): guests get ENOTSUP instead.
        self.linker.allow_shadowing = True
        self.linker.define_func(
            ALLOWED_IMPORT_MODULE,
            "poll_oneoff",
            wasmtime.FuncType([wasmtime.ValType.i32()] * 4, [wasmtime.ValType.i32()]),
            _refuse_poll_oneoff,
        )
        # Guest output stays on the guest's thread and costs fuel (see wasi_output).
        wasi_output.define_fd_write(self.linker, ALLOWED_IMPORT_MODULE)
        self.tick = tick
        #: What a serialized artifact of this engine depends on (its disk cache key).
        self.fingerprint = fingerprint(
            f"wasmtime {importlib.metadata.version('wasmtime')}",
            f"epoch=1 fuel=1 max_wasm_stack={max_wasm_stack}",
            f"growprobe {growprobe.VERSION}",
        )
        self._ticker = start_ticker(self.engine, tick)
        #: ``hold_ticks()``: a guest run starts on this engine, and its epoch must tick
        #: until ``release_ticks()`` (:mod:`edge_runner.wasm.ticker`: the timer rests
        #: otherwise).  The ticker's own methods, bound here: twice per request.
        self.hold_ticks: Callable[[], None] = self._ticker.hold
        self.release_ticks: Callable[[], None] = self._ticker.release
        self._hook = DeadlineHook(tick)
        self._deadlines: weakref.WeakKeyDictionary[wasmtime.Store, Deadline] = \
            weakref.WeakKeyDictionary()

    def close(self) -> None:
        self._ticker.close()

    def rest_ticks(self) -> bool:
        """Let the epoch rest if no guest ran since the last call; call it periodically.
        True if the ticks stopped now."""
        return self._ticker.rest()

    def deadline_ticks(self, seconds: float) -> int:
        """Ticks to set so an invocation runs at least ``seconds``, at most two ticks more.

        The deadline counts from the current epoch, which is already partly over.  (If
        the ticks are late, the store's :class:`~edge_runner.wasm.deadline.Deadline`
        still keeps the call running until ``seconds`` really passed.)
        """
        return max(1, math.ceil(seconds / self.tick)) + 1

    def compile(self, wasm: bytes, abi: str) -> CompiledModule:
        """Compile and check a module for ``abi``; raises :class:`ModuleRejected`.

        Blocking (tens of milliseconds to seconds): call it off the event loop.
        """
        digest = hashlib.sha256(wasm).hexdigest()
        if abi in COMPONENT_ABIS:
            return self._with_component(compile_component(self.engine, wasm), digest=digest,
                                        size=len(wasm), abi=abi)
        if is_component(wasm):
            raise ModuleRejected("WrongAbi", "this is a component; serve it with `abi: wasi-http`")
        try:
            probed = growprobe.instrument(wasm)
        except growprobe.Unsupported as exc:
            log.info("module sha256:%s compiled without a grow probe: %s", digest[:12], exc)
            probed = growprobe.Instrumented(wasm, None, 0)
        try:
            module = wasmtime.Module(self.engine, probed.wasm)
        except wasmtime.WasmtimeError as exc:
            if probed.wasm is wasm:
                raise ModuleRejected("CompileError", f"module does not compile: {exc}") from exc
            # Our rewrite must never be why a module is refused: judge the original.
            try:
                module = wasmtime.Module(self.engine, wasm)
            except wasmtime.WasmtimeError as original:
                raise ModuleRejected(
                    "CompileError", f"module does not compile: {original}"
                ) from original
            log.warning("module sha256:%s: its rewrite failed (%s); compiled without it",
                        digest[:12], exc)
            probed = growprobe.Instrumented(wasm, None, 0)
        if probed.why_not:
            log.debug("module sha256:%s: instances are made anew, never renewed: %s",
                      digest[:12], probed.why_not)
        return self.check(module, digest=digest, size=len(wasm), abi=abi,
                          grow_probe=probed.probe, renewal=probed.renewal)

    def check(
        self, module: wasmtime.Module, *, digest: str, size: int, abi: str,
        grow_probe: str | None = None, renewal: tuple[str, ...] | None = None,
    ) -> CompiledModule:
        """Check a compiled module against its ABI (shared rules: :mod:`edge_api.abi`)."""
        has_initialize = check_module(module, abi)
        try:
            pre = self.linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            raise ModuleRejected("ImportNotAllowed", f"imports cannot be satisfied: {exc}") from exc
        return CompiledModule(
            digest=digest,
            size=size,
            abi=abi,
            module=module,
            pre=pre,
            has_initialize=has_initialize,
            grow_probe=grow_probe,
            renewal=renewal,
            renew_wasi=any(i.module == ALLOWED_IMPORT_MODULE and i.name not in STATELESS_WASI
                           for i in module.imports),
        )

    def load_artifact(self, artifact: bytes, *, digest: str, size: int, abi: str
                      ) -> CompiledModule:
        """A module from a serialized artifact of this engine (see :mod:`.modcache`).

        Raises ``wasmtime.WasmtimeError`` if wasmtime refuses it (other version
        or settings); the caller then compiles from source.
        """
        if abi in COMPONENT_ABIS:
            component = wasmtime.component.Component.deserialize(self.engine, artifact)
            return self._with_component(component, digest=digest, size=size, abi=abi)
        module = wasmtime.Module.deserialize(self.engine, artifact)
        names = [e.name for e in module.exports]
        probe = growprobe.PROBE_EXPORT if growprobe.PROBE_EXPORT in names else None
        renewal = tuple(n for n in names if n.startswith(growprobe.RENEW_PREFIX)) \
            if growprobe.RENEWABLE_EXPORT in names else None
        return self.check(module, digest=digest, size=size, abi=abi, grow_probe=probe,
                          renewal=renewal)

    def _with_component(
        self, component: wasmtime.component.Component, *, digest: str, size: int, abi: str
    ) -> CompiledModule:
        check_component(component, self.engine, abi)
        empty = wasmtime.Module(self.engine, b"\0asm\x01\0\0\0")
        return CompiledModule(
            digest=digest, size=size, abi=abi, module=empty,
            pre=self.linker.instantiate_pre(empty), has_initialize=False, component=component,
        )

    def new_store(
        self, *, memory: int, wasi: wasmtime.WasiConfig, output: wasi_output.Streams
    ) -> wasmtime.Store:
        """A store capped to ``memory`` bytes of linear memory, with WASI configured
        and the guest's stdout and stderr going to ``output``."""
        store = wasmtime.Store(self.engine, data=output)
        wasi_output.attach(store)
        store.set_limits(
            memory_size=memory, table_elements=MAX_TABLE_ELEMENTS, instances=1, tables=4,
            memories=1,
        )
        store.set_wasi(wasi)
        store.set_fuel(UNLIMITED_FUEL)
        return store

    def limit_time(self, store: wasmtime.Store, seconds: float) -> float:
        """Stop the next call in ``store`` once ``seconds`` passed, never earlier
        (:mod:`edge_runner.wasm.deadline`); returns that deadline (``time.monotonic()``)."""
        deadline = self._deadlines.get(store)
        if deadline is None:
            deadline = self._deadlines[store] = Deadline()
            self._hook.arm(store, deadline)
        store.set_epoch_deadline(self.deadline_ticks(seconds))
        until = time.monotonic() + seconds
        deadline.set(until)
        return until

    def new_raw_store(
        self, *, memory: int, wasi: capi.WasiRecipe, output: wasi_output.Streams,
        deadline: Deadline,
    ) -> capi.RawStore:
        """:meth:`new_store` as a :class:`~edge_runner.wasm.capi.RawStore` (the same
        limits, sandbox and output routing, without wasmtime-py's Store object: what a
        fresh ``edge`` instance per request uses).  No fuel or epoch deadline yet: set
        them, and ``deadline`` (which must live as long as the store), before running
        anything."""
        store = capi.RawStore(self.engine, wasi_output.register(output), output)
        self._hook.arm(store, deadline)
        store.set_limits(
            memory_size=memory, table_elements=MAX_TABLE_ELEMENTS, instances=1, tables=4,
            memories=1,
        )
        wasi.apply(store.context)
        return store
