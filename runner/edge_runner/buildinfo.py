"""Which of the runner's modules run compiled (mypyc, see setup.py), for its log and metrics.

The runner image compiles the modules on the request path to C; a checkout or a
plain ``pip install`` runs them as Python.  Both behave the same (the tests run
both ways); the compiled ones are faster.  The server logs which it is at start
and exports it as ``edge_compiled_modules``.
"""

from __future__ import annotations

import sys
from importlib.machinery import EXTENSION_SUFFIXES

PACKAGES = ("edge_runner", "edge_api")
#: What setup.py compiles when asked: the modules on the path of a request.  Kept free
#: of imports beyond the standard library: setup.py loads this file on its own.
COMPILED = (
    "edge_api.routeindex",
    "edge_api.routing",
    "edge_runner.abi.base",
    "edge_runner.abi.edge",
    "edge_runner.abi.envelope",
    "edge_runner.http.accesslog",
    "edge_runner.http.auth",
    "edge_runner.http.content_type",
    "edge_runner.http.dataplane",
    "edge_runner.http.fastpath",
    "edge_runner.http.guard",
    "edge_runner.http.paths",
    "edge_runner.http.problems",
    "edge_runner.invoke.admission",
    "edge_runner.invoke.budget",
    "edge_runner.invoke.policy",
    "edge_runner.invoke.pool",
    "edge_runner.metrics",
    "edge_runner.plainmetrics",
    "edge_runner.wasm.deadline",
    "edge_runner.wasm.fastcall",
    "edge_runner.wasm.guest_output",
    "edge_runner.wasm.renewal",
)


def compiled_modules() -> list[str]:
    """The loaded modules of the runner's packages that are C extensions, sorted."""
    suffixes = tuple(EXTENSION_SUFFIXES)
    return sorted(
        name for name, module in list(sys.modules.items())
        if name.partition(".")[0] in PACKAGES
        and str(getattr(module, "__file__", None) or "").endswith(suffixes)
    )
