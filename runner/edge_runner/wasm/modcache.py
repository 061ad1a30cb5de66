"""On-disk cache of compiled modules (wasmtime's serialized artifacts).

Compiling a module costs tens to hundreds of milliseconds; deserializing a
compiled artifact costs about a millisecond.  The catalog asks this cache
before compiling and stores what it compiled, so a restarted runner, or a
second runner sharing the volume, starts from compiled code; and a module the
memory budget evicted (:mod:`edge_runner.invoke.modules`) comes back from here.

Files live at ``<dir>/<fingerprint>/<digest>.cwasm`` where the fingerprint
covers everything that makes an artifact valid for this process: the wasmtime
version, the engine settings and the host instrumentation version.  wasmtime
trusts a serialized artifact blindly (loading one runs its machine code), so
every file carries a header: a magic string and the sha256 of the payload.  A
file whose header or checksum does not match is deleted and recompiled, never
loaded.  Writes go to a temporary file in the same directory and are renamed
into place, so readers never see a partial artifact.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("edge_runner.wasm.modcache")

MAGIC = b"EDGE-RUNNER-CWASM-1\n"
_HEADER = len(MAGIC) + 32


def fingerprint(*parts: str) -> str:
    """A short, stable name for the settings an artifact depends on."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def write_atomically(path: Path, chunks: Iterable[bytes]) -> bool:
    """Write ``chunks`` to ``path`` through a temporary file in the same directory renamed
    into place, so readers never see a partial file; whether it was written (an OSError is
    logged, the temporary file removed)."""
    tmp = ""
    try:
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        with os.fdopen(handle, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write %s: %s", path, exc)
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        return False
    return True


class DiskCache:
    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.directory = directory / fingerprint
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if not digest or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256 hex digest: {digest!r}")
        return self.directory / f"{digest}.cwasm"

    def load(self, digest: str) -> bytes | None:
        """The artifact for ``digest``, or None (missing, or corrupt and now removed)."""
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("module cache: cannot read %s: %s", path, exc)
            return None
        payload = data[_HEADER:]
        checksum = data[len(MAGIC):_HEADER]
        if data[:len(MAGIC)] != MAGIC or hashlib.sha256(payload).digest() != checksum:
            log.warning("module cache: %s is corrupt or foreign; removing it", path.name)
            self.discard(digest)
            return None
        return payload

    def store(self, digest: str, payload: bytes) -> bool:
        """Write an artifact atomically; whether it was written (best effort: a full disk
        only costs speed, and memory: a module not on disk is never evicted)."""
        return write_atomically(self.path(digest),
                                (MAGIC, hashlib.sha256(payload).digest(), payload))

    def discard(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)
