"""Fixtures of the in-process tests: a real wasmtime engine per module, worker threads
that record what ran on them, and pools built on both (see support.inprocess)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edge_runner.wasm.engine import WasmEngine
from support.inprocess import Pools, RecordingExecutor, wasm_engine, worker_threads


@pytest.fixture(scope="module")
def engine() -> Iterator[WasmEngine]:
    with wasm_engine() as created:
        yield created


@pytest.fixture
def executor() -> Iterator[RecordingExecutor]:
    with worker_threads() as created:
        yield created


@pytest.fixture
def pools(engine: WasmEngine, executor: RecordingExecutor) -> Pools:
    return Pools(engine, executor)
