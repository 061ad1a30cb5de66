"""What a runner keeps per function (issue 17, R6: memory efficiency), in process with a
real engine and real modules.

The catalog (edge_runner.invoke.catalog) shares what equal functions have in common and
makes per-call structures only when a function needs them; these tests check that the
sharing and the laziness never change an answer: equal specs are one object, yet a
changed spec is the changed function's alone; a function never called has no queue and
no metric series, and both appear, with the right values, when it is used; the
memory budget counts each served function's bookkeeping (``FUNCTION_BYTES``) exactly
once, and gives it back when the function goes; the snapshot keeps only the route
specs that have auth.  (Module bytes not kept after compiling: test_modules.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import SimpleNamespace
from typing import cast

from edge_api.models import EdgeRouteSpec
from edge_runner.http.dataplane import DataPlane
from edge_runner.invoke.admission import Gate
from edge_runner.invoke.budget import MemoryBudget
from edge_runner.invoke.catalog import FUNCTION_BYTES, DesiredState, SharedSpecs
from edge_runner.invoke.policy import SharedLimits
from edge_runner.invoke.pool import FunctionRuntime
from edge_runner.wasm.engine import WasmEngine
from support import guests
from support.inprocess import (
    RecordingExecutor,
    asgi_call,
    body_of,
    function_spec,
    metric,
    new_catalog,
    route,
    source,
)


def test_equal_specs_are_one_object_and_a_changed_one_is_its_own(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    limits = {"memory": "1Mi", "timeout": "2s"}

    async def scenario() -> None:
        catalog = new_catalog(engine, executor)
        first = await catalog.apply(DesiredState([
            source("a", guests.constant_wat(b"a"), limits=limits),
            source("b", guests.constant_wat(b"b"), limits=limits),
            source("c", guests.constant_wat(b"c"), limits={"memory": "2Mi"})]))
        a, b, c = (first.functions[name] for name in "abc")
        assert a.spec is b.spec and a.spec is not c.spec
        assert a.spec.limits is b.spec.limits

        # "b" changes; "a" keeps its runtime, its spec object and its values.
        second = await catalog.apply(DesiredState([
            source("a", guests.constant_wat(b"a"), limits=limits),
            source("b", guests.constant_wat(b"b"), limits={"memory": "1Mi", "timeout": "3s"}),
            source("c", guests.constant_wat(b"c"), limits={"memory": "2Mi"})]))
        assert second.functions["a"] is a and a.spec.limits.timeout == 2.0
        assert second.functions["b"] is not b
        assert second.functions["b"].spec.limits.timeout == 3.0
        assert second.functions["b"].spec is not a.spec
        assert [await body_of(second.functions[n]) for n in "abc"] == [b"a", b"b", b"c"]

        # A function added later with a spec equal to a served one gets that object.
        third = await catalog.apply(DesiredState([
            source("a", guests.constant_wat(b"a"), limits=limits),
            source("d", guests.constant_wat(b"d"), limits=limits)]))
        assert third.functions["d"].spec is a.spec
        assert await body_of(third.functions["d"]) == b"d"

    asyncio.run(scenario())


def test_a_gate_makes_its_queue_only_when_a_request_waits() -> None:
    async def scenario() -> None:
        gate = Gate(1, 4)
        assert gate.try_enter() and not gate.queue_made and gate.waiting == 0
        waiter = asyncio.ensure_future(gate.wait(timeout=10))
        await asyncio.sleep(0)  # let it queue
        assert gate.queue_made and gate.waiting == 1
        gate.leave()  # handed to the waiter, not freed
        assert await waiter and gate.free == 0 and gate.waiting == 0
        gate.leave()
        assert gate.free == 1

    asyncio.run(scenario())


def test_a_function_never_called_has_no_queue_nor_series_until_it_is_used(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    async def scenario() -> None:
        catalog = new_catalog(engine, executor)
        snapshot = await catalog.apply(DesiredState(
            [source("idle", guests.constant_wat(b"late")),
             source("busy", guests.constant_wat(b"soon"))],
            [route("late", "/late", "idle"), route("soon", "/soon", "busy")]))
        plane = DataPlane(catalog, catalog.metrics)
        assert (await asgi_call(plane, "/soon")).body == b"soon"
        idle = snapshot.functions["idle"]
        assert not idle._gate.queue_made and idle.describe()["coldStarts"] == 0
        registry = catalog.metrics.registry
        for name in ("edge_cold_starts_total", "edge_cold_start_duration_seconds_count",
                     "edge_request_duration_seconds_count"):
            assert registry.get_sample_value(name, {"function": "idle"}) is None, name
            assert registry.get_sample_value(name, {"function": "busy"}) == 1, name

        for expected_requests in (1, 2):
            answer = await asgi_call(plane, "/late")
            assert (answer.status, answer.body) == (200, b"late")
            assert metric(catalog, "edge_requests_total", function="idle",
                          code="200") == expected_requests
            assert metric(catalog, "edge_request_duration_seconds_count",
                          function="idle") == expected_requests
        # One instance, reused for the second request; its creation was timed once.
        assert metric(catalog, "edge_cold_starts_total", function="idle") == 1
        assert metric(catalog, "edge_cold_start_duration_seconds_count", function="idle") == 1
        assert metric(catalog, "edge_cold_start_duration_seconds_sum", function="idle") > 0
        assert not idle._gate.queue_made  # never had to wait

    asyncio.run(scenario())


def test_the_budget_counts_each_served_function_once_and_frees_it_when_it_goes(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    budget = MemoryBudget(limit=2**30, fraction=1.0, baseline=0, source="test")
    shared = SharedLimits(budget=budget, threads=Gate(4, 8))

    def modules() -> int:
        described = catalog.modules.describe()
        return described["loadedBytes"]

    async def scenario() -> None:
        names = ("a", "b", "c")
        await catalog.apply(DesiredState(
            [source(n, guests.constant_wat(n.encode())) for n in names]))
        assert budget.reserved == modules() + 3 * FUNCTION_BYTES
        # "b" gets a new version (another spec), "c" goes, "a" stays as it was.
        await catalog.apply(DesiredState([
            source("a", guests.constant_wat(b"a")),
            source("b", guests.constant_wat(b"b"), limits={"timeout": "2s"})]))
        assert budget.reserved == modules() + 2 * FUNCTION_BYTES
        await catalog.apply(DesiredState([]))
        assert budget.reserved == 0

    catalog = new_catalog(engine, executor, shared=shared)
    asyncio.run(scenario())


def test_the_snapshot_keeps_only_the_route_specs_with_auth(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    guarded = EdgeRouteSpec.model_validate({
        "rules": [{"match": {"path": "/guarded"}, "function": "f"}],
        "auth": {"apiKey": {"secretRef": {"name": "keys"}}}})
    one_rule = EdgeRouteSpec.model_validate({"rules": [
        {"match": {"path": "/open"}, "function": "f"},
        {"match": {"path": "/rule"}, "function": "f",
         "auth": {"apiKey": {"secretRef": {"name": "keys"}}}}]})
    anonymous = EdgeRouteSpec.model_validate({
        "rules": [{"match": {"path": "/anonymous"}, "function": "f"}],
        "auth": {"anonymous": True}})

    async def scenario() -> None:
        catalog = new_catalog(engine, executor)
        snapshot = await catalog.apply(DesiredState(
            [source("f", guests.constant_wat(b"f"))],
            [route("plain", "/plain", "f"), ("guarded", guarded), ("one-rule", one_rule),
             ("anonymous", anonymous)],
            secrets={"keys": {"k": b"secret"}}))
        assert [name for name, _ in snapshot.routes] == ["guarded", "one-rule"]
        assert len(snapshot.table.rules) == 5  # every route is routed all the same
        plane = DataPlane(catalog, catalog.metrics)
        assert (await asgi_call(plane, "/plain")).status == 200
        assert (await asgi_call(plane, "/anonymous")).status == 200
        assert (await asgi_call(plane, "/open")).status == 200
        assert (await asgi_call(plane, "/guarded")).status == 401
        assert (await asgi_call(plane, "/rule")).status == 401
        allowed = await asgi_call(plane, "/guarded", headers=[
            (b"host", b"edge.test"), (b"x-api-key", b"secret")])
        assert (allowed.status, allowed.body) == (200, b"f")

    asyncio.run(scenario())


def test_the_shared_specs_forget_what_no_served_function_has() -> None:
    """The specs are kept across applies (an apply pays only for what it changes), and
    pruned once they hold many more than the served functions need."""
    specs = SharedSpecs()
    kept = specs.get(function_spec(env={"N": "kept"}))
    old = [specs.get(function_spec(env={"N": str(i)})) for i in range(100)]
    assert specs.get(function_spec(env={"N": "0"})) is old[0]  # shared while remembered
    served = cast(Mapping[str, FunctionRuntime], {"kept": SimpleNamespace(spec=kept)})
    specs.prune(served)
    assert specs.get(function_spec(env={"N": "kept"})) is kept
    fresh = function_spec(env={"N": "0"})
    assert specs.get(fresh) is fresh  # forgotten: nobody served it
