"""What the runner serves right now: functions, their pools and the route table.

Sources of configuration (standalone manifests in :mod:`edge_runner.sources.manifests`,
operator ConfigMaps in :mod:`edge_runner.sources.cluster`) describe a
:class:`DesiredState`; :meth:`Catalog.apply` compiles what changed off the
event loop and swaps in a new immutable :class:`Snapshot` in one assignment.
Requests already running keep the runtime they started with ("in-flight
requests finish on the old version"); unchanged functions keep their hot
instances.  A function that fails to load is reported and, if an older good
version exists, that one keeps serving.

What a function costs besides its instances and compiled module (its runtime,
spec and module slot: :data:`FUNCTION_BYTES`) is counted in the memory budget
(:mod:`edge_runner.invoke.budget`) too, for as long as the catalog serves it.
Functions with equal specs share one spec object, and the snapshot keeps only
the route specs that the data plane's auth needs (the route table has the
rest), so a runner with 10,000 functions does not carry 10,000 copies of the
same few values; after a large apply the freed heap goes back to the system.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import wasmtime

from edge_api.abi import ModuleRejected
from edge_api.models import EdgeFunctionSpec, EdgeRouteSpec
from edge_api.routing import EMPTY_TABLE, RouteTable, build_table
from edge_runner.invoke.budget import trim_heap
from edge_runner.invoke.lanes import QuarantinePolicy
from edge_runner.invoke.modules import ModuleSlot, ResidentModules
from edge_runner.invoke.policy import InlinePolicy, QueuePolicy, SharedLimits
from edge_runner.invoke.pool import FunctionRuntime
from edge_runner.metrics import RunnerMetrics
from edge_runner.wasm.engine import CompiledModule, WasmEngine
from edge_runner.wasm.modcache import DiskCache

log = logging.getLogger("edge_runner.invoke.catalog")

#: What one served function costs in memory besides its instances and compiled
#: module (counted there): its runtime and pool bookkeeping, spec, module slot and
#: route table entry.  Measured with tracemalloc over 1,000 functions loaded from
#: manifests: 3.7 KiB each; rounded up.  Not counted: the metric series a function
#: gets once it is called (a few hundred bytes each, edge_runner.plainmetrics), nor
#: the Python objects of live instances.
FUNCTION_BYTES = 4 * 1024
#: An apply of this many functions or more returns the freed heap to the system
#: afterwards (:func:`~edge_runner.invoke.budget.trim_heap`).
TRIM_AFTER = 100
#: An apply lets the event loop serve requests after this many functions: a runner
#: with 10,000 functions would otherwise stop serving for the whole walk (~100 ms).
YIELD_EVERY = 256


@dataclass(frozen=True, slots=True)
class FunctionSource:
    """One function as a source describes it: a spec plus module bytes, or an error."""

    name: str
    spec: EdgeFunctionSpec | None
    wasm: bytes | None
    origin: str
    error: str | None = None
    #: sha256 hex of ``wasm`` when the source already verified it (saves hashing a large
    #: module on the event loop at every apply); None: the catalog computes it.
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class DesiredState:
    functions: list[FunctionSource] = field(default_factory=list)
    routes: list[tuple[str, EdgeRouteSpec]] = field(default_factory=list)
    #: Problems that belong to no single function (unreadable files, bad routes).
    errors: list[str] = field(default_factory=list)
    #: Files outside the source's own folder that it read (module paths), to watch.
    files: set[Path] = field(default_factory=set)
    #: The Secrets that routes' ``auth`` names: name -> data key -> value (never logged).
    secrets: dict[str, dict[str, bytes]] = field(default_factory=dict)
    #: JWKS documents the operator fetched for routes' ``jwt.jwksUri``: uri -> document.
    jwks: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Snapshot:
    functions: dict[str, FunctionRuntime]
    table: RouteTable
    #: name -> error for functions that failed to load (possibly serving an older version).
    failures: dict[str, str]
    errors: tuple[str, ...]
    #: The route specs that have auth, and their Secrets, for the data plane's auth
    #: (http/auth.py); routes without auth are only in ``table``.
    routes: tuple[tuple[str, EdgeRouteSpec], ...] = ()
    secrets: Mapping[str, Mapping[str, bytes]] = field(default_factory=dict)
    jwks: Mapping[str, bytes] = field(default_factory=dict)


EMPTY = Snapshot(functions={}, table=EMPTY_TABLE, failures={}, errors=())


def _has_auth(route: EdgeRouteSpec) -> bool:
    return any(route.auth_of(index) is not None for index in range(len(route.rules)))


class SharedSpecs:
    """One object per distinct spec among the served functions: a function whose spec
    equals one already served (kept, or loaded earlier) gets that object.  Specs are
    frozen, so a function whose spec changes gets a new object and the others keep
    theirs.  Kept across applies, so an apply pays only for the functions it changes;
    pruned to the served specs once it holds many more than they need."""

    def __init__(self) -> None:
        self._specs: dict[tuple[object, ...], EdgeFunctionSpec] = {}

    def get(self, spec: EdgeFunctionSpec) -> EdgeFunctionSpec:
        key = (spec.source, spec.abi, spec.limits, spec.pool, *spec.env)
        return self._specs.setdefault(key, spec)

    def prune(self, served: Mapping[str, FunctionRuntime]) -> None:
        """Forget the specs no served function has (when there are many of them)."""
        if len(self._specs) > 2 * len(served) + 64:
            self._specs = {}
            for runtime in served.values():
                self.get(runtime.spec)


def _index_routes(routes: list[tuple[str, EdgeRouteSpec]]
                  ) -> tuple[RouteTable, tuple[tuple[str, EdgeRouteSpec], ...]]:
    """The route table, and the routes with auth (for the data plane's auth)."""
    return build_table(routes), tuple(r for r in routes if _has_auth(r[1]))


class Catalog:
    def __init__(
        self,
        *,
        engine: WasmEngine,
        executor: Executor,
        metrics: RunnerMetrics,
        queue: QueuePolicy | None = None,
        inline: InlinePolicy | None = None,
        shared: SharedLimits | None = None,
        disk_cache: DiskCache | None = None,
        instance_max_requests: int = 0,
        instance_renewal: bool = True,
        quarantine: QuarantinePolicy | None = None,
    ) -> None:
        self.engine = engine
        self.executor = executor
        self.metrics = metrics
        self.queue = queue or QueuePolicy()
        self.inline = inline or InlinePolicy()
        self.shared = shared
        self.disk_cache = disk_cache
        self.instance_max_requests = instance_max_requests
        self.instance_renewal = instance_renewal
        self.quarantine = quarantine or QuarantinePolicy()
        self.snapshot = EMPTY
        self.budget = (shared or SharedLimits.unbounded()).budget
        #: True once the first complete desired state was applied (/readyz).
        self.synced = False
        #: Set after every apply (registration reports new digests at once).
        self.changed = asyncio.Event()
        self.modules = ResidentModules(
            engine=engine, budget=self.budget, disk_cache=disk_cache,
            on_event=lambda result: metrics.module_cache.labels(result).inc())
        self._lock = asyncio.Lock()
        self._specs = SharedSpecs()
        #: The functions and routes of the last apply (their metric series are dropped
        #: when they are deleted).
        self._names: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
        metrics.watch_instances(self._instance_counts)
        metrics.watch_quarantine(self._quarantined)

    def _instance_counts(self) -> Iterator[tuple[str, str, int]]:
        for name, runtime in self.snapshot.functions.items():
            pool = runtime.describe()
            for state in ("idle", "busy", "waiting"):
                yield name, state, int(str(pool[state]))

    def _quarantined(self) -> Iterator[tuple[str, bool]]:
        for name, runtime in self.snapshot.functions.items():
            yield name, runtime.quarantined

    async def apply(self, desired: DesiredState) -> Snapshot:
        """Make ``desired`` the served configuration; returns the new snapshot."""
        async with self._lock:
            old = self.snapshot
            functions: dict[str, FunctionRuntime] = {}
            failures: dict[str, str] = {}
            for index, source in enumerate(desired.functions, 1):
                if index % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # requests go on meanwhile (on the old snapshot)
                runtime, error = await self._load(source, old.functions.get(source.name))
                if runtime is not None:
                    functions[source.name] = runtime
                if error is not None:
                    failures[source.name] = error
                    log.warning("function %s not loaded: %s", source.name, error,
                                extra={"function": source.name})
            # Off the event loop: 10,000 routes take a few hundred ms to index.
            table, with_auth = await asyncio.get_running_loop().run_in_executor(
                None, _index_routes, desired.routes)
            for conflict in table.conflicts:
                log.warning("route conflict: %s", conflict.describe())
            for error in desired.errors:
                log.warning("configuration error: %s", error)
            snapshot = Snapshot(functions, table, failures, tuple(desired.errors),
                                with_auth, desired.secrets, desired.jwks)
            self.snapshot = snapshot
            for name, runtime in old.functions.items():
                if functions.get(name) is not runtime:
                    runtime.close()
                    self.budget.release(FUNCTION_BYTES)
            self._forget_deleted(desired)
            self._specs.prune(functions)
            self.synced = True
            self.changed.set()
            self._update_gauges(snapshot)
            if len(desired.functions) >= TRIM_AFTER:
                await asyncio.get_running_loop().run_in_executor(None, trim_heap)
            self.metrics.reloads.labels("error" if failures or desired.errors else "ok").inc()
            return snapshot

    def _forget_deleted(self, desired: DesiredState) -> None:
        """Drop the metric series of the functions and routes this apply deleted."""
        functions = frozenset(source.name for source in desired.functions)
        routes = frozenset(name for name, _ in desired.routes)
        self.metrics.forget(self._names[0] - functions, self._names[1] - routes)
        self._names = (functions, routes)

    async def _load(
        self, source: FunctionSource, current: FunctionRuntime | None
    ) -> tuple[FunctionRuntime | None, str | None]:
        if source.error is not None or source.spec is None or source.wasm is None:
            return current, source.error or "no module"
        wasm = source.wasm
        digest = source.digest or hashlib.sha256(wasm).hexdigest()
        if current is not None and current.digest == digest and current.spec == source.spec \
                and not current.compiled.lost:
            return current, None
        spec = self._specs.get(source.spec)
        try:
            compiled = await self._compile(wasm, digest, spec.abi)
        except ModuleRejected as exc:
            return current, f"{exc.reason}: {exc}"
        runtime = FunctionRuntime(
            name=source.name,
            spec=spec,
            compiled=compiled,
            engine=self.engine,
            executor=self.executor,
            queue=self.queue,
            inline=self.inline,
            events=self.metrics.pool_events(source.name),
            max_requests=self.instance_max_requests,
            renew=self.instance_renewal,
            shared=self.shared,
            quarantine=self.quarantine,
        )
        self.budget.force(FUNCTION_BYTES)  # released when apply closes it
        log.info("function %s loaded (sha256:%s, %d bytes)", source.name, digest[:12],
                 len(wasm), extra={"function": source.name})
        return runtime, None

    async def _compile(self, wasm: bytes, digest: str, abi: str) -> ModuleSlot:
        """The module's slot (held for the caller's runtime): shared with a version
        that has it already, else from the disk cache, else compiled and stored there."""
        slot = self.modules.get(digest, abi)
        if slot is not None:
            self.metrics.module_cache.labels("hit").inc()
            return slot
        loop = asyncio.get_running_loop()
        loaded = await loop.run_in_executor(None, self._from_disk, digest, len(wasm), abi)
        if loaded is not None:
            self.metrics.module_cache.labels("disk_hit").inc()
            compiled, resident, on_disk = *loaded, True
        else:
            self.metrics.module_cache.labels("miss").inc()
            compiled, resident, on_disk = await loop.run_in_executor(
                None, self._compile_and_store, wasm, abi)
        return self.modules.add(compiled, resident_bytes=resident, on_disk=on_disk)

    def _from_disk(self, digest: str, size: int, abi: str
                   ) -> tuple[CompiledModule, int] | None:
        """The compiled module from the disk cache and its size, if a valid artifact is there."""
        if self.disk_cache is None:
            return None
        artifact = self.disk_cache.load(digest)
        if artifact is None:
            return None
        try:
            return (self.engine.load_artifact(artifact, digest=digest, size=size, abi=abi),
                    len(artifact))
        except wasmtime.WasmtimeError as exc:
            log.warning("module cache: artifact of sha256:%s refused (%s); recompiling",
                        digest[:12], exc)
            self.disk_cache.discard(digest)
            return None

    def _compile_and_store(self, wasm: bytes, abi: str) -> tuple[CompiledModule, int, bool]:
        """Compile; the module, its size in memory (its artifact's) and whether it is on disk."""
        start = time.perf_counter()
        compiled = self.engine.compile(wasm, abi)
        self.metrics.compile_duration.observe(time.perf_counter() - start)
        artifact = compiled.serialize()
        stored = self.disk_cache is not None and self.disk_cache.store(compiled.digest, artifact)
        return compiled, len(artifact), stored

    def _update_gauges(self, snapshot: Snapshot) -> None:
        broken = len(set(snapshot.failures) - set(snapshot.functions))
        self.metrics.functions_loaded.labels("ready").set(len(snapshot.functions))
        self.metrics.functions_loaded.labels("error").set(broken)
        self.metrics.route_conflicts.set(len(snapshot.table.conflicts))

    def describe(self) -> dict[str, object]:
        """The body of ``GET /v1/functions``."""
        snapshot = self.snapshot
        items: list[dict[str, object]] = []
        for name in sorted(set(snapshot.functions) | set(snapshot.failures)):
            runtime = snapshot.functions.get(name)
            entry: dict[str, object] = {"name": name, "state": "ready" if runtime else "error"}
            if runtime is not None:
                entry.update(
                    digest=f"sha256:{runtime.digest}",
                    size=runtime.compiled.size,
                    abi=runtime.spec.abi,
                    pool=runtime.describe(),
                )
            if name in snapshot.failures:
                entry["error"] = snapshot.failures[name]
            items.append(entry)
        return {
            "synced": self.synced,
            "functions": items,
            "routes": [
                {"rule": r.ident, "host": r.host or "*", "path": r.path, "pathType": r.path_type,
                 "methods": sorted(r.methods), "functions": list(r.functions)}
                for r in snapshot.table.rules
            ],
            "conflicts": [c.describe() for c in snapshot.table.conflicts],
            "modules": self.modules.describe(),
            "errors": list(snapshot.errors),
        }
