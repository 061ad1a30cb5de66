"""Shared fixtures: manifest folders and real runner processes."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.runner import RunnerProcess
from support.wasm import build_function


@pytest.fixture(scope="session")
def hello_wasm() -> Path:
    return build_function("hello-world")


@pytest.fixture(scope="session")
def wagi_wasm() -> Path:
    return build_function("wagi-hello")


@pytest.fixture
def manifest_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "manifests"
    folder.mkdir()
    return folder


@pytest.fixture(scope="session")
def samples_dir(
    tmp_path_factory: pytest.TempPathFactory, hello_wasm: Path, wagi_wasm: Path
) -> Path:
    """A copy of the hello-world and wagi-hello sample folders with their built modules."""
    root = tmp_path_factory.mktemp("samples")
    for name in ("hello-world", "wagi-hello"):
        source = hello_wasm.parent.parent / name
        shutil.copytree(source / "manifests", root / name / "manifests")
        module = hello_wasm if name == "hello-world" else wagi_wasm
        shutil.copy(module, root / name / module.name)
    return root


@pytest.fixture(scope="module")
def samples_runner(samples_dir: Path) -> Iterator[RunnerProcess]:
    with RunnerProcess(samples_dir) as runner:
        yield runner
