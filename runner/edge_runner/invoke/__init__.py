"""Invoking functions: the catalog of what is served, each function's pool of
instances, admission gates, the lanes of worker threads (with the quarantine)
and the memory budget.

The data plane (:mod:`edge_runner.http.dataplane`) reads the catalog's snapshot
and calls :meth:`~edge_runner.invoke.pool.FunctionRuntime.invoke`; the pool
runs the function's ABI executor (:mod:`edge_runner.abi`) inline or on a worker
thread of its lane (:mod:`edge_runner.invoke.lanes`), within its gates and the
runner's memory budget.
"""
