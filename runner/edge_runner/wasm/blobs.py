"""On-disk store of module bytes fetched by reference, named by their sha256.

Beside the compiled-module cache (:mod:`edge_runner.wasm.modcache`), under
``<cache dir>/blobs/<hex digest>.wasm``.  :mod:`edge_runner.sources.artifacts`
asks it before fetching a module the operator published by reference (an
``oci`` artifact, a large ``url`` or ``configMapRef`` module), so a restarted
runner, or one whose registry is down, loads what it fetched before.  A file
is used only if its bytes hash to its name (anything else is deleted); writes
go to a temporary file renamed into place.  Without a directory it is a no-op
store (every start fetches again).
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

from edge_runner.wasm.modcache import write_atomically

log = logging.getLogger("edge_runner.wasm.blobs")

_HEX = re.compile(r"^[a-f0-9]{64}$")


class BlobStore:
    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        if directory is not None:
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.warning("blob store disabled: cannot use %s: %s", directory, exc)
                self.directory = None

    def _path(self, digest: str) -> Path | None:
        hex_digest = digest.removeprefix("sha256:")
        if not _HEX.match(hex_digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return None if self.directory is None else self.directory / f"{hex_digest}.wasm"

    def load(self, digest: str) -> bytes | None:
        """The bytes of ``digest`` (``sha256:<hex>``), or None (absent, or corrupt: removed)."""
        path = self._path(digest)
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("blob store: cannot read %s: %s", path, exc)
            return None
        if hashlib.sha256(data).hexdigest() != path.stem:
            log.warning("blob store: %s does not match its digest; removing it", path.name)
            path.unlink(missing_ok=True)
            return None
        return data

    def store(self, digest: str, data: bytes) -> None:
        """Keep ``data`` (already verified to be ``digest``); best effort."""
        path = self._path(digest)
        if path is not None:
            write_atomically(path, (data,))
