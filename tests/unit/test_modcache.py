"""The on-disk compiled-module cache: round trip, atomic files, corruption detection."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edge_runner.wasm.modcache import DiskCache, fingerprint

DIGEST = hashlib.sha256(b"module").hexdigest()


def test_round_trip_and_keying(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, fingerprint("wasmtime 50", "fuel=1"))
    assert cache.load(DIGEST) is None
    cache.store(DIGEST, b"compiled bytes")
    assert cache.load(DIGEST) == b"compiled bytes"
    other = DiskCache(tmp_path, fingerprint("wasmtime 51", "fuel=1"))
    assert other.load(DIGEST) is None  # another engine never sees it
    assert [p.name for p in cache.directory.iterdir()] == [f"{DIGEST}.cwasm"]  # no temp left


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign", "empty"])
def test_corrupt_files_are_removed_not_loaded(tmp_path: Path, damage: str) -> None:
    cache = DiskCache(tmp_path, "fp")
    cache.store(DIGEST, b"x" * 1000)
    path = cache.path(DIGEST)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-1] ^= 0xFF
    elif damage == "truncate":
        data = data[:-10]
    elif damage == "foreign":
        data = bytearray(b"\x7fELF" + bytes(data[4:]))
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    assert cache.load(DIGEST) is None
    assert not path.exists()


def test_digest_must_be_hex(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, "fp")
    with pytest.raises(ValueError, match="sha256"):
        cache.path("../../etc/passwd")
