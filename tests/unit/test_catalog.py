"""Catalog.apply (edge_runner.invoke.catalog) in process, with a real engine and real modules.

The contract (the catalog's docstring, docs/abi.md "Instances and reuse", docs/http.md
``GET /v1/functions``): a new snapshot is swapped in whole; unchanged functions keep
their runtime and hot instances; a changed module or spec gets a new runtime and the
old one is closed (requests in flight finish on it); a function that fails to load
is reported and an older good version keeps serving; removed functions are closed;
the route table is rebuilt.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from typing import cast

from prometheus_client import generate_latest

from edge_api.routing import RouteMatch, RouteTable
from edge_runner.http.dataplane import DataPlane
from edge_runner.invoke.admission import Gate
from edge_runner.invoke.budget import MemoryBudget
from edge_runner.invoke.catalog import (
    FUNCTION_BYTES,
    YIELD_EVERY,
    Catalog,
    DesiredState,
    FunctionSource,
)
from edge_runner.invoke.policy import SharedLimits
from edge_runner.invoke.pool import FunctionRuntime
from edge_runner.wasm.engine import WasmEngine
from support import guests
from support.inprocess import (
    RecordingExecutor,
    asgi_call,
    body_of,
    count_of,
    function_spec,
    metric,
    new_catalog,
    route,
    source,
    wasm_of,
)

#: A module that does not compile (a section header cut short).
TRUNCATED = b"\x00asm\x01\x00\x00\x00\x05"


def state(*functions: FunctionSource, routes: list[tuple[str, str, str]] | None = None
          ) -> DesiredState:
    """Functions plus routes given as (route name, exact path, function)."""
    return DesiredState(list(functions), [route(*r) for r in routes or []])


def counter(**spec: object) -> FunctionSource:
    return source("counter", guests.counter_wat(), **spec)


def routed(table: RouteTable, path: str) -> str | None:
    """The function ``GET path`` goes to, or None."""
    found = table.lookup("edge.test", "GET", path)
    return found.function if isinstance(found, RouteMatch) else None


def described(catalog: Catalog) -> dict[str, dict[str, object]]:
    """The ``functions`` of ``GET /v1/functions`` by name."""
    items = cast(list[dict[str, object]], catalog.describe()["functions"])
    return {str(item["name"]): item for item in items}


def test_apply_serves_the_desired_functions_and_routes(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    hello = guests.constant_wat(b"hi")

    async def scenario() -> Catalog:
        catalog = new_catalog(engine, executor)
        assert not catalog.synced
        snapshot = await catalog.apply(state(
            counter(), source("hello", hello),
            routes=[("count", "/count", "counter"), ("greet", "/hello", "hello")]))
        assert catalog.snapshot is snapshot
        assert await body_of(snapshot.functions["hello"]) == b"hi"
        return catalog

    catalog = asyncio.run(scenario())
    snapshot = catalog.snapshot
    assert sorted(snapshot.functions) == ["counter", "hello"]
    assert (snapshot.failures, snapshot.errors) == ({}, ())
    assert snapshot.functions["hello"].digest == hashlib.sha256(wasm_of(hello)).hexdigest()
    assert routed(snapshot.table, "/count") == "counter"
    assert routed(snapshot.table, "/hello") == "hello"
    assert catalog.synced and catalog.changed.is_set()
    assert metric(catalog, "edge_config_reloads_total", result="ok") == 1
    assert metric(catalog, "edge_functions", state="ready") == 2
    assert {name: (f["state"], f["abi"]) for name, f in described(catalog).items()} == {
        "counter": ("ready", "edge"), "hello": ("ready", "edge")}
    assert catalog.describe()["routes"] == [
        {"rule": "count/0", "host": "*", "path": "/count", "pathType": "Exact", "methods": [],
         "functions": ["counter"]},
        {"rule": "greet/0", "host": "*", "path": "/hello", "pathType": "Exact", "methods": [],
         "functions": ["hello"]},
    ]


def test_an_unchanged_function_keeps_its_runtime_and_hot_instances(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    async def scenario() -> list[int]:
        catalog = new_catalog(engine, executor)
        runtime = (await catalog.apply(state(counter()))).functions["counter"]
        counts = [count_of(await body_of(runtime)) for _ in range(2)]
        again = await catalog.apply(state(counter()))  # equal spec, same bytes
        assert again.functions["counter"] is runtime and not runtime.closed
        counts.append(count_of(await body_of(again.functions["counter"])))
        assert metric(catalog, "edge_module_cache_requests_total", result="miss") == 1
        return counts

    assert asyncio.run(scenario()) == [1, 2, 3]  # the globals of the hot instance


def test_a_new_digest_gets_a_new_runtime_and_the_old_one_is_closed(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    async def scenario() -> None:
        catalog = new_catalog(engine, executor)
        old = (await catalog.apply(state(counter()))).functions["counter"]
        assert count_of(await body_of(old)) == 1
        assert old.describe()["idle"] == 1
        new = (await catalog.apply(state(source("counter", guests.constant_wat(b"v2")))
                                   )).functions["counter"]
        assert new is not old and new.digest != old.digest
        assert old.closed and old.describe()["idle"] == 0  # its hot instance dropped
        assert await body_of(new) == b"v2"

    asyncio.run(scenario())


def test_a_changed_spec_with_the_same_module_gets_a_new_runtime(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    async def scenario() -> None:
        catalog = new_catalog(engine, executor)
        old = (await catalog.apply(state(counter()))).functions["counter"]
        new = (await catalog.apply(state(counter(limits={"timeout": "2s"})))
               ).functions["counter"]
        assert new is not old and old.closed
        assert new.digest == old.digest and new.spec.limits.timeout == 2.0
        assert new.compiled is old.compiled  # compiled once
        assert metric(catalog, "edge_module_cache_requests_total", result="miss") == 1
        assert metric(catalog, "edge_module_cache_requests_total", result="hit") == 1

    asyncio.run(scenario())


def test_a_module_that_fails_to_load_leaves_the_older_version_serving(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    async def scenario() -> None:
        catalog = new_catalog(engine, executor)
        good = (await catalog.apply(state(counter(), routes=[("c", "/c", "counter")]))
                ).functions["counter"]
        assert count_of(await body_of(good)) == 1
        broken = await catalog.apply(state(source("counter", TRUNCATED),
                                           routes=[("c", "/c", "counter")]))
        assert broken.functions["counter"] is good and not good.closed
        assert broken.failures["counter"].startswith("CompileError: ")
        assert count_of(await body_of(good)) == 2  # still hot
        entry = described(catalog)["counter"]
        assert (entry["state"], entry["digest"]) == ("ready", f"sha256:{good.digest}")
        assert entry["error"] == broken.failures["counter"]
        assert metric(catalog, "edge_config_reloads_total", result="error") == 1
        assert metric(catalog, "edge_functions", state="error") == 0  # something serves

        unreadable = FunctionSource("counter", None, None, "c.yaml#1", "c.yaml#1: bad spec")
        also_broken = await catalog.apply(state(unreadable, routes=[("c", "/c", "counter")]))
        assert also_broken.functions["counter"] is good and not good.closed
        assert also_broken.failures == {"counter": "c.yaml#1: bad spec"}

        fixed = await catalog.apply(state(counter(), routes=[("c", "/c", "counter")]))
        assert fixed.failures == {} and fixed.functions["counter"] is good

    asyncio.run(scenario())


def test_a_new_function_that_fails_to_load_is_reported_and_not_served(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    from_source = FunctionSource("unreadable", None, None, "a.yaml#1", "a.yaml#1: bad spec")
    no_module = FunctionSource("no-module", function_spec(), None, "b.yaml#1")

    async def scenario() -> Catalog:
        catalog = new_catalog(engine, executor)
        await catalog.apply(state(
            source("importer", guests.importer_wat("env", "steal")), from_source, no_module,
            counter()))
        return catalog

    catalog = asyncio.run(scenario())
    snapshot = catalog.snapshot
    assert list(snapshot.functions) == ["counter"]
    assert snapshot.failures["importer"].startswith("ImportNotAllowed: ")
    assert snapshot.failures["unreadable"] == "a.yaml#1: bad spec"
    assert snapshot.failures["no-module"]  # some reason, whatever its words
    assert {name: f["state"] for name, f in described(catalog).items()} == {
        "counter": "ready", "importer": "error", "unreadable": "error", "no-module": "error"}
    assert metric(catalog, "edge_functions", state="error") == 3
    assert metric(catalog, "edge_functions", state="ready") == 1


def test_a_removed_function_is_closed_and_leaves_the_budget(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    budget = MemoryBudget(limit=2**30, fraction=1.0, baseline=0, source="test")
    shared = SharedLimits(budget=budget, threads=Gate(4, 8))

    async def scenario() -> tuple[FunctionRuntime, FunctionRuntime]:
        catalog = new_catalog(engine, executor, shared=shared)
        first = await catalog.apply(state(counter(), source("gone", guests.counter_wat())))
        kept, gone = first.functions["counter"], first.functions["gone"]
        await body_of(gone)
        second = await catalog.apply(state(counter()))
        assert list(second.functions) == ["counter"] and second.functions["counter"] is kept
        return kept, gone

    kept, gone = asyncio.run(scenario())
    assert gone.closed and gone.describe()["idle"] == 0
    assert not kept.closed
    assert gone not in budget._pools and kept in budget._pools
    # What stays reserved: the compiled module both shared, which "counter" still uses,
    # and the bookkeeping of the one function left.
    assert kept.compiled is gone.compiled and kept.compiled.loaded
    assert budget.reserved == kept.compiled.resident_bytes + FUNCTION_BYTES
    assert kept.compiled.resident_bytes > 0


def test_the_route_table_is_rebuilt_and_the_old_snapshot_left_alone(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    async def scenario() -> None:
        catalog = new_catalog(engine, executor)
        old = await catalog.apply(state(counter(), routes=[("r", "/a", "counter")]))
        new = await catalog.apply(state(counter(), routes=[("r", "/b", "counter")]))
        assert new.table is not old.table
        assert (routed(new.table, "/a"), routed(new.table, "/b")) == (None, "counter")
        # A request that read the old snapshot still routes by it.
        assert (routed(old.table, "/a"), routed(old.table, "/b")) == ("counter", None)

    asyncio.run(scenario())


def test_a_snapshot_is_swapped_whole_and_in_flight_requests_finish_on_the_old_version(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    async def scenario() -> None:
        catalog = new_catalog(engine, executor)
        old = await catalog.apply(state(source("fn", guests.constant_wat(b"v1")),
                                        routes=[("r", "/v", "fn")]))
        old_runtime = old.functions["fn"]
        applying = asyncio.ensure_future(catalog.apply(state(
            source("fn", guests.constant_wat(b"v2")), routes=[("r", "/v", "fn")])))
        seen = []
        while not applying.done():  # the compile runs off the loop meanwhile
            seen.append(catalog.snapshot)
            await asyncio.sleep(0)
        new = await applying
        assert seen and seen[0] is old
        assert all(s is old or s is new for s in seen)  # never anything in between
        assert catalog.snapshot is new
        assert old.functions == {"fn": old_runtime}  # the old snapshot was not touched
        assert old_runtime.closed
        assert await body_of(old_runtime) == b"v1"  # a request that had it finishes on it
        assert old_runtime.describe()["idle"] == 0  # and its instance is not kept
        assert await body_of(new.functions["fn"]) == b"v2"

    asyncio.run(scenario())


def test_a_deleted_function_or_route_leaves_no_metric_series(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    """Functions and routes that come and go must not leave a series each behind (a
    runner would grow without bound); the ones still served keep their counts."""
    kept_routes = [route("kept", "/kept", "counter")]
    both = DesiredState([counter(), source("gone", guests.trap_wat())],
                        [*kept_routes, route("doomed", "/doomed", "gone")])

    async def scenario() -> tuple[str, str]:
        catalog = new_catalog(engine, executor)
        await catalog.apply(both)
        app = DataPlane(catalog, catalog.metrics)
        for path in ("/kept", "/doomed"):
            await asgi_call(app, path)
        before = generate_latest(catalog.metrics.registry).decode()
        await catalog.apply(DesiredState([counter()], kept_routes))
        return before, generate_latest(catalog.metrics.registry).decode()

    before, after = asyncio.run(scenario())
    families = ("edge_requests_total", "edge_request_duration_seconds_count",
                "edge_cold_starts_total", "edge_invocation_errors_total")
    for family in families:
        assert f'{family}{{' in before and 'function="gone"' in _lines(before, family), family
        assert 'function="gone"' not in _lines(after, family), family
    assert 'route="doomed"' in _lines(before, "edge_route_requests_total")
    assert 'route="doomed"' not in _lines(after, "edge_route_requests_total")
    # What is still served keeps its counts.
    for family in families[:3]:
        assert _line(after, family, "counter") == _line(before, family, "counter")
    assert 'route="kept"' in _lines(after, "edge_route_requests_total")


def _lines(exposition: str, family: str) -> str:
    """The sample lines of ``family`` (name followed by labels), joined."""
    return "\n".join(line for line in exposition.splitlines()
                     if line.startswith(family + "{"))


def _line(exposition: str, family: str, function: str) -> str:
    [line] = [line for line in _lines(exposition, family).splitlines()
              if f'function="{function}"' in line]
    return line


def test_a_large_apply_lets_requests_through_while_it_walks_the_functions(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    """An apply over thousands of unchanged functions (nothing to compile, so nothing it
    awaits would suspend it) still hands the event loop back every YIELD_EVERY of them:
    a runner with 10,000 functions keeps serving during the walk."""
    count = 3 * YIELD_EVERY

    class Watched(list[FunctionSource]):
        """The desired functions; notes, during the apply's first walk over them, how
        often the loop had run other work at each one."""

        def __iter__(self) -> Iterator[FunctionSource]:
            first = not seen
            for item in super().__iter__():
                if first:
                    seen.append(turns)
                yield item

    seen: list[int] = []
    turns = 0

    async def other_work(stop: asyncio.Event) -> None:
        nonlocal turns
        while not stop.is_set():
            turns += 1
            await asyncio.sleep(0)

    async def scenario() -> None:
        catalog = new_catalog(engine, executor)
        functions = [source(f"f{i}", guests.constant_wat(b"ok")) for i in range(count)]
        await catalog.apply(DesiredState(functions))
        stop = asyncio.Event()
        probe = asyncio.create_task(other_work(stop))
        await asyncio.sleep(0)
        seen.clear()
        again = await catalog.apply(DesiredState(Watched(functions)))
        stop.set()
        await probe
        assert len(again.functions) == count

    asyncio.run(scenario())
    assert len(seen) == count
    # the walk was interrupted at least once per YIELD_EVERY functions
    assert len(set(seen)) >= count // YIELD_EVERY
