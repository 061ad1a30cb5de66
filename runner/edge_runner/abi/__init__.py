"""ABI executors: one module per function ABI behind one interface.

The data plane routes a request and hands an :class:`~edge_runner.abi.base.HttpRequest`
to the function's pool (:mod:`edge_runner.invoke.pool`), which asks the
function's executor to encode it, to create instances and to run them.  Adding
an ABI is one module here plus its entry in :data:`EXECUTORS`.
"""

from __future__ import annotations

from edge_runner.abi.base import AbiExecutor, HttpRequest, Instance, Response
from edge_runner.abi.edge import EDGE
from edge_runner.abi.wagi import WAGI
from edge_runner.abi.wasihttp import WASI_HTTP

#: Executor of each ``spec.abi`` value.
EXECUTORS: dict[str, AbiExecutor] = {EDGE.abi: EDGE, WAGI.abi: WAGI, WASI_HTTP.abi: WASI_HTTP}


def executor_for(abi: str) -> AbiExecutor:
    """The executor of ``abi``; KeyError for an ABI this runner does not serve."""
    return EXECUTORS[abi]


__all__ = ["EXECUTORS", "AbiExecutor", "HttpRequest", "Instance", "Response", "executor_for"]
