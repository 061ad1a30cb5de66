"""Small hand-written WAT guests for tests: well-behaved, broken and hostile.

Each ``*_wat`` builder returns WebAssembly text of an ``edge``-ABI module;
:func:`write_function` writes a module plus its EdgeFunction/EdgeRoute
manifests into a folder for a standalone runner.
"""

from __future__ import annotations

import struct
from pathlib import Path

import yaml

from support.wasm import wat_to_wasm

ALLOC = """
  (global $next (mut i32) (i32.const 65536))
  (func (export "edge_alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $n)))
    (local.get $p))
"""


def _data(raw: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in raw)


def response_envelope(status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
                      ) -> bytes:
    out = struct.pack("<II", status, len(headers or []))
    for name, value in headers or []:
        out += struct.pack("<I", len(name)) + name + struct.pack("<I", len(value)) + value
    return out + struct.pack("<I", len(body)) + body


def constant_wat(body: bytes, status: int = 200, *, raw: bytes | None = None,
                 extra: str = "", handle_prefix: str = "") -> str:
    """A guest answering every request with a fixed envelope (``raw`` overrides it)."""
    envelope = raw if raw is not None else response_envelope(status, body)
    return f"""(module
  (memory (export "memory") 4)
  {ALLOC}
  (data (i32.const 1024) "{_data(envelope)}")
  {extra}
  (func (export "edge_handle") (param i32 i32) (result i64)
    {handle_prefix}
    (global.set $next (i32.const 65536))
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const {len(envelope)}))))
"""


def trap_wat() -> str:
    return constant_wat(b"never", handle_prefix="unreachable")


def counter_wat() -> str:
    """Answers with a counter that lives in a global: shows instance reuse."""
    return f"""(module
  (memory (export "memory") 4)
  {ALLOC}
  (global $count (mut i32) (i32.const 0))
  (data (i32.const 1024) "{_data(struct.pack('<III', 200, 0, 4))}")
  (func (export "edge_handle") (param i32 i32) (result i64)
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (i32.store (i32.const 1036) (global.get $count))
    (global.set $next (i32.const 65536))
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 16))))
"""


def write_function(
    folder: Path, name: str, wat_or_wasm: str | bytes, *, path: str | None = None,
    abi: str = "edge", limits: dict[str, object] | None = None,
    pool: dict[str, object] | None = None, route: bool = True, path_type: str = "Exact",
) -> Path:
    """Write ``name.wasm`` and its manifests into ``folder``; returns the manifest path."""
    wasm = wat_to_wasm(wat_or_wasm) if isinstance(wat_or_wasm, str) else wat_or_wasm
    (folder / f"{name}.wasm").write_bytes(wasm)
    documents: list[dict[str, object]] = [{
        "apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeFunction",
        "metadata": {"name": name},
        "spec": {"source": {"path": f"{name}.wasm"}, "abi": abi,
                 "limits": limits or {}, "pool": pool or {}},
    }]
    if route:
        documents.append({
            "apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeRoute",
            "metadata": {"name": name},
            "spec": {"rules": [{"match": {"path": path or f"/{name}", "pathType": path_type},
                                "function": name}]},
        })
    manifest = folder / f"{name}.yaml"
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(documents))
    tmp.rename(manifest)
    return manifest
