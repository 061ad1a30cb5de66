"""Module validation for the function reconcile, cached by (digest, ABI).

Used by :mod:`edge_operator.functions`; one :class:`ValidationCache` lives in
the handlers' shared context (:class:`edge_operator.handlers.Context`).  The
reconcile runs on creation, on every spec change and every 60 s for
every EdgeFunction (the resync timer).  Compiling a module is the expensive
part and its result depends only on the module bytes and the ABI, so
:class:`ValidationCache` keeps the outcome of :func:`edge_api.abi.validate`
(the digest, or the rejection's reason and message) for the most recently used
(digest, ABI) pairs, bounded; an unchanged module is not compiled again.
Compilation runs off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

import wasmtime

from edge_api.abi import ModuleRejected, validate

#: Entries kept: each is a digest and a short message, not the module.
DEFAULT_SIZE: Final = 1024

Validator = Callable[[bytes, str, wasmtime.Engine], str]
_Result = str | tuple[str, str]  # the digest, or (reason, message) of a rejection


class ValidationCache:
    """A bounded LRU of validation results keyed by (sha256 digest, ABI)."""

    def __init__(self, size: int = DEFAULT_SIZE, *, validator: Validator = validate,
                 engine: wasmtime.Engine | None = None) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._validator = validator
        self._engine = engine or wasmtime.Engine()
        self._results: OrderedDict[tuple[str, str], _Result] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._results)

    def lookup(self, digest: str, abi: str) -> _Result | None:
        result = self._results.get((digest, abi))
        if result is not None:
            self._results.move_to_end((digest, abi))
        return result

    def store(self, digest: str, abi: str, result: _Result) -> None:
        self._results[(digest, abi)] = result
        self._results.move_to_end((digest, abi))
        while len(self._results) > self.size:
            self._results.popitem(last=False)

    def known(self, digest: str, abi: str) -> str:
        """The cached result for a module not downloaded again (an unchanged oci digest);
        raises :class:`ModuleRejected` as validate does, KeyError if not cached."""
        result = self.lookup(digest, abi)
        if result is None:
            raise KeyError(digest)
        self.hits += 1
        if isinstance(result, tuple):
            raise ModuleRejected(*result)
        return result

    async def validate(self, wasm: bytes, abi: str) -> str:
        """The module's ``sha256:`` digest; raises :class:`ModuleRejected` as validate does."""
        digest = f"sha256:{hashlib.sha256(wasm).hexdigest()}"
        result = self.lookup(digest, abi)
        if result is None:
            self.misses += 1
            try:
                result = await asyncio.to_thread(self._validator, wasm, abi, self._engine)
            except ModuleRejected as exc:
                result = (exc.reason, str(exc))
            self.store(digest, abi, result)
        else:
            self.hits += 1
        if isinstance(result, tuple):
            raise ModuleRejected(*result)
        return result
