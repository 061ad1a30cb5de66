"""Build hook: the data plane's hot modules compiled to C with mypyc, on request.

Everything about the package is in pyproject.toml; this file only adds extension
modules, and only when ``EDGE_RUNNER_COMPILE=1`` (the runner image sets it; `make
compiled` builds a compiled copy for the tests and benchmarks).  A plain ``pip
install`` and the editable install of ``make`` stay pure Python.

Why: a hot request is a few thousand Python opcodes spread over about ninety small
steps (routing, auth, the pool's policy, the envelope, the access line); mypyc
runs the same code, typed as it already is (``mypy --strict``), a third faster
(docs/performance.md).  The build needs a C compiler, mypy and the runtime
dependencies installed (``pip install --no-build-isolation``): mypyc type-checks
the modules against them, with the settings of pyproject.toml.

Only modules on the request path are compiled.  Classes that plain Python
subclasses say so (``mypyc_attr(allow_interpreted_subclasses=True)``); compiled
classes take no weak references and ignore patches of module globals.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def _compiled_sources() -> list[str]:
    """The source paths of ``edge_runner.buildinfo.COMPILED`` (one list, read from there)."""
    spec = importlib.util.spec_from_file_location(
        "_buildinfo", ROOT / "runner" / "edge_runner" / "buildinfo.py")
    assert spec is not None and spec.loader is not None
    buildinfo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(buildinfo)
    folders = {"edge_api": "api", "edge_runner": "runner"}
    return [f"{folders[name.partition('.')[0]]}/{name.replace('.', '/')}.py"
            for name in buildinfo.COMPILED]


def _extensions() -> list[object]:
    if os.environ.get("EDGE_RUNNER_COMPILE") != "1":
        return []
    from mypyc.build import mypycify  # only for a compiled build

    return list(mypycify(_compiled_sources(), opt_level="3", group_name="edge_runner_compiled"))


setup(ext_modules=_extensions())
