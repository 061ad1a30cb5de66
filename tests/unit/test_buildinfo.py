"""edge_runner.buildinfo: which runner modules are loaded compiled (the log line and
``edge_compiled_modules``), and the list setup.py compiles."""

from __future__ import annotations

import importlib.util
import sys
import types
from importlib.machinery import EXTENSION_SUFFIXES

import pytest

from edge_runner.buildinfo import COMPILED, compiled_modules


def _module(name: str, file: str | None) -> types.ModuleType:
    module = types.ModuleType(name)
    if file is not None:
        module.__file__ = file
    return module


def test_only_loaded_extension_modules_of_the_runner_packages_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    suffix = EXTENSION_SUFFIXES[0]
    present = set(compiled_modules())
    for name, file in {
        "edge_runner.fake_compiled": f"/x/edge_runner/fake_compiled{suffix}",
        "edge_api.fake_compiled": f"/x/edge_api/fake_compiled{suffix}",
        "edge_runner.fake_python": "/x/edge_runner/fake_python.py",
        "edge_runner.fake_builtin": None,
        "edge_operator.fake_compiled": f"/x/edge_operator/fake_compiled{suffix}",
        "edge_runnerx.fake_compiled": f"/x/edge_runnerx/fake_compiled{suffix}",
    }.items():
        monkeypatch.setitem(sys.modules, name, _module(name, file))
    found = compiled_modules()
    assert set(found) - present == {"edge_runner.fake_compiled", "edge_api.fake_compiled"}
    assert found == sorted(found)


def test_every_module_to_compile_exists_and_is_on_the_request_path() -> None:
    assert len(set(COMPILED)) == len(COMPILED)
    for name in COMPILED:
        assert name.partition(".")[0] in ("edge_runner", "edge_api"), name
        assert importlib.util.find_spec(name) is not None, name
