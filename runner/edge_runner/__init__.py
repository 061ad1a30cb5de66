"""edge-runner data plane: serves WebAssembly HTTP functions (uvicorn + wasmtime).

Sub-packages by domain, each importing only those below it (checked by
import-linter, see pyproject.toml):

- :mod:`.http`: the request path starts in :mod:`.http.dataplane` (ASGI: route
  with :mod:`edge_api.routing`, read the body, hand over); also the admin plane,
  problem+json errors and the hostile-client guard;
- :mod:`.sources`: configuration from a manifest folder or the operator's ConfigMaps;
- :mod:`.invoke`: the catalog of what is served, each function's pool, gates, budget;
- :mod:`.abi`: one executor per function ABI (``edge``, ``wagi``) behind one interface;
- :mod:`.wasm`: wasmtime narrowed to what the runner uses (all private use in :mod:`.wasm.capi`);
- :mod:`.host`: cgroup limits and CPU scheduling of the runner's threads.

:mod:`.errors` (why an invocation failed) and :mod:`.metrics` are shared;
:mod:`.server` runs it all; :mod:`.cli` is the entry point.
"""
