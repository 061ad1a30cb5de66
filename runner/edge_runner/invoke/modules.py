"""Compiled modules in memory: counted in the memory budget, evicted LRU, reloaded from disk.

The catalog (:mod:`edge_runner.invoke.catalog`) asks :class:`ResidentModules`
for a :class:`ModuleSlot` per (digest, ABI) when it loads a function; every
version of a function with that module shares the slot, and its pool
(:mod:`edge_runner.invoke.pool`) takes the compiled module from it for each new
instance (:meth:`ModuleSlot.acquire`) and gives it back when the instance is
dropped (:meth:`ModuleSlot.release`).

A loaded module reserves its compiled size (the serialized artifact's length,
about what its machine code and metadata take in memory) in the runner's
memory budget (:mod:`edge_runner.invoke.budget`).  When the budget needs room
it evicts, least recently used first, idle instances and then modules that no
live instance uses and whose artifact is in the disk cache
(:mod:`edge_runner.wasm.modcache`); the next instance reloads the module from
there (about a millisecond).  So a runner with 10,000 functions holds only the
modules its budget has room for.  A module without a disk artifact (the cache
is off, or its write failed) is never evicted.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable

import wasmtime

from edge_runner.errors import Unavailable
from edge_runner.invoke.budget import MemoryBudget
from edge_runner.wasm.engine import CompiledModule, WasmEngine
from edge_runner.wasm.modcache import DiskCache

log = logging.getLogger("edge_runner.invoke.modules")

#: Memory a loaded module takes besides its artifact's bytes (wasmtime's module and
#: pre-instantiation structures, page-rounded mappings): ~5 KiB measured, rounded up.
MODULE_OVERHEAD = 8 * 1024


class ModuleSlot:
    """One compiled module, in memory or only on disk; thread-safe.

    Locks: ``_lock`` is held to load or unload the module (a reload may evict
    other slots, which only ever *try* their own lock); ``_counts`` guards the
    counters and is never held while calling out.
    """

    # One per module of a runner that may have 10,000: no instance dict.
    __slots__ = ("__weakref__", "_counted", "_counts", "_holders", "_instances", "_lock",
                 "_module", "_owner", "abi", "digest", "last_used", "on_disk", "reloads",
                 "resident_bytes", "size")

    def __init__(self, compiled: CompiledModule, *, resident_bytes: int,
                 owner: ResidentModules | None = None, on_disk: bool = False) -> None:
        self.digest = compiled.digest
        self.abi = compiled.abi
        self.size = compiled.size
        #: Bytes the loaded module is counted for in the memory budget.
        self.resident_bytes = resident_bytes + MODULE_OVERHEAD if owner is not None else 0
        self.on_disk = on_disk
        self.reloads = 0
        self.last_used = time.monotonic()
        self._owner = owner
        self._module: CompiledModule | None = compiled
        self._instances = 0
        self._holders = 0
        #: Whether the module's bytes are reserved in the budget now.
        self._counted = False
        self._lock = threading.Lock()
        self._counts = threading.Lock()

    @classmethod
    def pinned(cls, compiled: CompiledModule) -> ModuleSlot:
        """A slot outside any budget that is never evicted (tests, embedding)."""
        return cls(compiled, resident_bytes=0)  # no owner: counted nowhere

    @property
    def loaded(self) -> bool:
        return self._module is not None

    @property
    def held(self) -> bool:
        return self._holders > 0

    @property
    def lost(self) -> bool:
        """Evicted, and its disk artifact is gone: only loading the source again helps."""
        return self._module is None and not self.on_disk

    def acquire(self) -> CompiledModule:
        """The module for a new instance (reloaded if evicted); raises Unavailable (503)
        if the budget has no room for it.  Pair with :meth:`release`."""
        with self._lock:
            module = self._module
            if module is None:
                assert self._owner is not None  # pinned slots are never unloaded
                # A closed version's last requests reload it uncounted: it goes with them.
                module = self._owner.reload(self, count=self.held)
                self._module = module
                self._counted = self.held
                self.reloads += 1
            with self._counts:
                self._instances += 1
            self.last_used = time.monotonic()
            return module

    def release(self) -> None:
        """An instance of this module was dropped."""
        with self._counts:
            self._instances -= 1
        self.last_used = time.monotonic()

    def evict_idle(self) -> bool:
        """Unload the module if nothing uses it and it can come back (the budget needs room)."""
        if not self._lock.acquire(blocking=False):
            return False  # being acquired right now: not idle
        try:
            if self._module is None or not self._counted or self._instances \
                    or not self.on_disk or self._owner is None:
                return False
            self._module = None
            self._counted = False
            self._owner.unloaded(self)
            return True
        finally:
            self._lock.release()

    def counted(self, loaded: bool) -> None:
        """The budget counts the module now (``loaded``), or had no room: it is dropped
        and loaded again on first use."""
        with self._lock:
            self._counted = loaded
            if not loaded:
                self._module = None

    def hold(self) -> ModuleSlot:
        """A function version uses this slot (until it calls :meth:`let_go`)."""
        with self._counts:
            self._holders += 1
        return self

    def let_go(self) -> None:
        """A function version no longer uses this slot; after the last one the budget no
        longer counts it, and the module goes with the slot once the requests still
        running on a closed version are done (garbage collection)."""
        with self._counts:
            self._holders -= 1
            last = self._holders <= 0
        if last and self._owner is not None:
            with self._lock:
                if self._counted and self._holders <= 0:
                    self._counted = False
                    self._owner.unloaded(self, evicted=False)


class ResidentModules:
    """The slots of one catalog, and their share of the memory budget."""

    def __init__(self, *, engine: WasmEngine, budget: MemoryBudget,
                 disk_cache: DiskCache | None,
                 on_event: Callable[[str], None] = lambda _result: None) -> None:
        self.engine = engine
        self.budget = budget
        self.disk_cache = disk_cache
        self._on_event = on_event
        self._slots: weakref.WeakValueDictionary[tuple[str, str], ModuleSlot] = \
            weakref.WeakValueDictionary()
        self.evictions = 0

    def get(self, digest: str, abi: str) -> ModuleSlot | None:
        """The slot a function version holds for this module, if any (held once more)."""
        slot = self._slots.get((digest, abi))
        if slot is None or not slot.held or slot.lost:
            return None
        return slot.hold()

    def add(self, compiled: CompiledModule, *, resident_bytes: int, on_disk: bool
            ) -> ModuleSlot:
        """Count a freshly loaded module (held once); over budget, older ones are evicted,
        or this one is if nothing else can go."""
        slot = ModuleSlot(compiled, resident_bytes=resident_bytes, owner=self,
                          on_disk=on_disk).hold()
        self._slots[(slot.digest, slot.abi)] = slot
        if not self.budget.reserve(slot.resident_bytes):
            if on_disk:
                slot.counted(False)  # no room now: loaded again on first use
                return slot
            self.budget.force(slot.resident_bytes)  # cannot come back: kept, counted
        slot.counted(True)
        self.budget.register(slot)
        return slot

    def reload(self, slot: ModuleSlot, *, count: bool = True) -> CompiledModule:
        """Load an evicted module from the disk cache (the slot's lock is held); ``count``:
        reserve its bytes in the budget (503 if there is no room)."""
        if count and not self.budget.reserve(slot.resident_bytes):
            raise Unavailable("memory_budget", f"module sha256:{slot.digest[:12]} needs"
                              f" {slot.resident_bytes} bytes and the runner has"
                              f" {max(self.budget.headroom, 0)} left of its memory budget")
        try:
            artifact = self.disk_cache.load(slot.digest) if self.disk_cache else None
            if artifact is None:
                raise Unavailable("not_loaded", f"module sha256:{slot.digest[:12]} left the"
                                  " disk cache; it is compiled again when the configuration is next"
                                  " applied",
                                  retry_after=5)
            module = self.engine.load_artifact(artifact, digest=slot.digest, size=slot.size,
                                               abi=slot.abi)
        except (Unavailable, wasmtime.WasmtimeError) as exc:
            if count:
                self.budget.release(slot.resident_bytes)
            slot.on_disk = False
            if isinstance(exc, Unavailable):
                raise
            raise Unavailable("not_loaded", f"module sha256:{slot.digest[:12]}: its disk"
                              f" artifact was refused ({exc})", retry_after=5) from exc
        if count:
            self.budget.register(slot)
        self._on_event("reload")
        return module

    def unloaded(self, slot: ModuleSlot, *, evicted: bool = True) -> None:
        self.budget.unregister(slot)
        self.budget.release(slot.resident_bytes)
        if evicted:
            self.evictions += 1

    def describe(self) -> dict[str, int]:
        slots = list(self._slots.values())
        loaded = [s for s in slots if s.loaded]
        return {"modules": len(slots), "loaded": len(loaded),
                "loadedBytes": sum(s.resident_bytes for s in loaded),
                "evictions": self.evictions}
