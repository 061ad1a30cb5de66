"""edge-runner data plane: serves WebAssembly HTTP functions (FastAPI/uvicorn + wasmtime).

Flow of a request: :mod:`dataplane` (ASGI) -> :mod:`routing` -> :mod:`pool`
-> :mod:`abi_edge` / :mod:`abi_wagi` -> :mod:`engine`.  Configuration comes from
:mod:`manifests` (standalone) or :mod:`cluster` (operator ConfigMaps) into
:mod:`catalog`.  :mod:`server` runs it all; :mod:`cli` is the entry point.
"""
