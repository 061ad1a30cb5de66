"""The function reconcile's decisions, in process (edge_operator.functions, .validation):
outcomes of each failure, the retry delay of transient ones, and validation cached by
(digest, ABI).  Only paths that decide before any API call run here; publishing is
tested against the real API server (tests/k8s)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
import wasmtime
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster, User

from edge_api.abi import ModuleRejected, validate
from edge_api.k8s import async_client
from edge_api.wire import MAX_MODULE_BYTES
from edge_operator.config import OperatorConfig
from edge_operator.functions import (
    FunctionOutcome,
    failed,
    published,
    reconcile_function,
    retry_delay,
    too_large,
)
from edge_operator.metrics import OperatorMetrics
from edge_operator.sources import Resolved
from edge_operator.validation import ValidationCache
from support.wasm import wat_to_wasm

EDGE = """(module {extra} (memory (export "memory") {pages})
  (func (export "edge_alloc") (param i32) (result i32) (i32.const 0))
  (func (export "edge_handle") (param i32 i32) (result i64) (i64.const 0)))"""


def edge(extra: str = "", pages: int = 1) -> bytes:
    return wat_to_wasm(EDGE.format(extra=extra, pages=pages))


def unused_client() -> AsyncClient:
    """A client for a server nobody listens on: these paths must not call it."""
    config = KubeConfig.from_one(cluster=Cluster(server="http://127.0.0.1:9"), user=User())
    single = config.get()
    assert single is not None
    return async_client(single, field_manager="test")


def function(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeFunction",
            "metadata": {"name": "f", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": spec}


def inline(wasm: bytes) -> dict[str, Any]:
    return {"source": {"inline": base64.b64encode(wasm).decode()}}


def reconcile(spec: dict[str, Any], cache: ValidationCache | None = None,
              retry: int = 0) -> FunctionOutcome:
    async def run() -> FunctionOutcome:
        client = unused_client()
        try:
            return await reconcile_function(
                function(spec), kube=client,
                config=OperatorConfig(allow_fetch_from=["127.0.0.0/8"]), metrics=OperatorMetrics(),
                validations=cache if cache is not None else ValidationCache(),
                retry=retry)
        finally:
            await client.close()
    return asyncio.run(run())


def states(outcome: FunctionOutcome) -> dict[str, tuple[str, str]]:
    return {w.type: (w.status_text, w.reason) for w in outcome.conditions}


def test_retry_delay_doubles_up_to_the_resync_interval() -> None:
    assert [retry_delay(n) for n in range(6)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    assert retry_delay(-1) == 5.0


def test_failed_sets_ready_and_module_valid() -> None:
    invalid = failed("CompileError", "bad", module_valid=False, result="invalid")
    assert states(invalid) == {"Ready": ("False", "CompileError"),
                               "ModuleValid": ("False", "CompileError")}
    assert invalid.warning == ("CompileError", "bad") and invalid.retry_after is None
    unknown = failed("FetchFailed", "down", module_valid=None, result="error", retry_after=5)
    assert states(unknown)["ModuleValid"] == ("Unknown", "FetchFailed")
    assert unknown.retry_after == 5
    valid = failed("ModuleTooLarge", "big", module_valid=True, result="invalid")
    assert states(valid)["ModuleValid"] == ("True", "Valid")


def test_published_outcome() -> None:
    outcome = published("edge", Resolved(b"\0asm", "sha256:" + "ab" * 32, 4), "hello")
    assert outcome.fields == {"digest": "sha256:" + "ab" * 32, "shortDigest": "ab" * 6,
                              "size": 4, "artifact": "configmap/edgefn-hello"}
    assert states(outcome) == {"Ready": ("True", "Published"), "ModuleValid": ("True", "Valid")}
    assert outcome.warning is None and outcome.retry_after is None and outcome.result == "ok"


def test_too_large_only_above_the_configmap_limit() -> None:
    assert too_large(Resolved(None, "sha256:00", MAX_MODULE_BYTES)) is None
    outcome = too_large(Resolved(None, "sha256:" + "cd" * 32, MAX_MODULE_BYTES + 1))
    assert outcome is not None and states(outcome)["Ready"] == ("False", "ModuleTooLarge")
    assert outcome.fields["size"] == MAX_MODULE_BYTES + 1 and "artifact" not in outcome.fields


def test_invalid_spec_is_not_retried() -> None:
    outcome = reconcile({"source": {}})
    assert states(outcome)["Ready"] == ("False", "InvalidSpec")
    assert outcome.result == "invalid" and outcome.retry_after is None


def test_path_source_is_refused_in_a_cluster() -> None:
    outcome = reconcile({"source": {"path": "hello.wasm"}})
    assert states(outcome) == {"Ready": ("False", "PathNotSupported"),
                               "ModuleValid": ("False", "PathNotSupported")}
    assert outcome.retry_after is None


@pytest.mark.parametrize("retry", [0, 3])
def test_a_transient_source_error_carries_its_retry_delay(retry: int) -> None:
    spec = {"source": {"url": {"url": "http://127.0.0.1:9/m.wasm", "sha256": "a" * 64}}}
    outcome = reconcile(spec, retry=retry)
    assert states(outcome)["ModuleValid"] == ("Unknown", "FetchFailed")
    assert outcome.result == "error"
    assert outcome.retry_after == retry_delay(retry)


def test_a_rejected_module_is_reported_and_not_retried() -> None:
    outcome = reconcile(inline(edge('(import "env" "steal" (func))')))
    assert states(outcome)["ModuleValid"] == ("False", "ImportNotAllowed")
    assert outcome.retry_after is None and outcome.fields == {}


def test_a_valid_module_too_large_for_a_configmap() -> None:
    data = '(data (i32.const 0) "' + "a" * (MAX_MODULE_BYTES + 100) + '")'
    outcome = reconcile(inline(edge(data, pages=17)))
    assert states(outcome) == {"Ready": ("False", "ModuleTooLarge"),
                               "ModuleValid": ("True", "Valid")}
    assert outcome.fields["digest"].startswith("sha256:")


def test_an_unchanged_module_is_validated_once() -> None:
    cache = ValidationCache()
    bad = inline(edge('(import "env" "steal" (func))'))
    for _ in range(3):
        assert states(reconcile(bad, cache))["Ready"] == ("False", "ImportNotAllowed")
    assert (cache.misses, cache.hits) == (1, 2)


class Counting:
    def __init__(self) -> None:
        self.calls: list[tuple[bytes, str]] = []

    def __call__(self, wasm: bytes, abi: str, engine: wasmtime.Engine) -> str:
        self.calls.append((wasm, abi))
        return validate(wasm, abi, engine)


def test_cache_is_keyed_by_digest_and_abi() -> None:
    counting = Counting()
    cache = ValidationCache(validator=counting)
    module = edge()
    assert asyncio.run(cache.validate(module, "edge")).startswith("sha256:")
    assert asyncio.run(cache.validate(module, "edge")) == validate(module, "edge")
    with pytest.raises(ModuleRejected) as caught:
        asyncio.run(cache.validate(module, "wagi"))  # other ABI: checked anew, and refused
    assert caught.value.reason == "MissingExport"
    with pytest.raises(ModuleRejected):
        asyncio.run(cache.validate(module, "wagi"))  # the rejection is cached as well
    assert [abi for _wasm, abi in counting.calls] == ["edge", "wagi"]
    assert (cache.hits, cache.misses) == (2, 2)


def test_cache_is_bounded_least_recently_used_first() -> None:
    counting = Counting()
    cache = ValidationCache(2, validator=counting)
    one, two, three = (edge(f'(global i32 (i32.const {n}))') for n in (1, 2, 3))
    for module in (one, two, one, three):  # `two` is the least recently used
        asyncio.run(cache.validate(module, "edge"))
    assert len(cache) == 2
    asyncio.run(cache.validate(one, "edge"))
    asyncio.run(cache.validate(two, "edge"))
    assert len(counting.calls) == 4  # one, two, three, then two again
    with pytest.raises(ValueError):
        ValidationCache(0)
