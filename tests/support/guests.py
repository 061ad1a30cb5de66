"""Small hand-written WAT guests for tests: well-behaved, broken and hostile.

Each ``*_wat`` builder returns WebAssembly text of an ``edge``-ABI module
(``wagi_*_wat``: a WAGI command module); :func:`write_function` writes a module
plus its EdgeFunction/EdgeRoute manifests into a folder for a standalone runner.

The hostile corpus (docs/abi.md, issue #4) and what each must get:

    endless_wat            loops forever                        504 timeout
    busy_wat(ms)           spins on the WASI clock for ms       200 (slow, for concurrency)
    random_wat(kib, n)     n WASI random_get of kib KiB         200 (CPU for little fuel)
    memory_bomb_wat        grows until refused, then aborts     502 memory
    big_grow_wat           one huge memory.grow, then aborts    502 memory (far below the cap)
    recursion_wat          unbounded recursion                  502 stack_overflow
    oob_load_wat           loads outside its memory             502 trap
    giant_response_wat     response length over the limit       502 response_too_large
    outside_response_wat   response outside guest memory        502 bad_response
    bad_header_wat         header value with a newline          502 bad_response
    table_bomb_wat         grows its table until refused        502 trap
    output_flood_wat       floods stdout                        200, log bounded
    env_probe_wat          returns its environment              only spec.env
    fs_probe_wat           tries files and sockets              EBADF everywhere
    importer_wat           imports what the ABI does not grant  refused at load

:func:`sized_wat` is a constant guest padded with a data segment to a given size
(large-module tests and benchmarks).
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


WASI = "wasi_snapshot_preview1"
ERRNO_BADF = 8


def grown_wat(body: bytes, mebibytes: int) -> str:
    """Answers ``body`` after growing its memory once by ``mebibytes`` (kept afterwards)."""
    pages = mebibytes * 16
    return constant_wat(body, handle_prefix=f"""(if (i32.lt_u (memory.size) (i32.const {pages}))
      (then (drop (memory.grow (i32.const {pages})))))""")


def random_wat(kibibytes: int, times: int) -> str:
    """Answers ``filled`` after ``times`` WASI random_get of ``kibibytes``: CPU time for
    little fuel (a host call costs its fuel once, however long it runs)."""
    return _wasi_loop_wat(
        b"filled", times, pages=4 + kibibytes // 64,
        imported='"random_get" (func $random (param i32 i32) (result i32))',
        call=f"(call $random (i32.const 131072) (i32.const {kibibytes * 1024}))",
    )


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


def _respond(offset: int = 1024) -> str:
    """Instructions returning the envelope stored at ``offset`` (its length at offset-4)."""
    return f"""(global.set $next (i32.const 65536))
    (i64.or (i64.shl (i64.const {offset}) (i64.const 32))
            (i64.extend_i32_u (i32.load (i32.const {offset - 4}))))"""


def endless_wat() -> str:
    return constant_wat(b"never", handle_prefix="(loop $forever (br $forever))")


def _spinning_wat(body: bytes, milliseconds: int, before: str = "") -> str:
    """Runs ``before``, spins ``milliseconds`` on the WASI monotonic clock, answers ``body``."""
    envelope = response_envelope(200, body)
    return f"""(module
  (import "{WASI}" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (memory (export "memory") 4)
  {ALLOC}
  (data (i32.const 1020) "{_data(struct.pack('<I', len(envelope)) + envelope)}")
  (func $now (result i64)
    (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 512)))
    (i64.load (i32.const 512)))
  (func (export "edge_handle") (param i32 i32) (result i64)
    (local $until i64)
    {before}
    (local.set $until (i64.add (call $now) (i64.const {milliseconds * 1_000_000})))
    (loop $spin (br_if $spin (i64.lt_u (call $now) (local.get $until))))
    {_respond()}))
"""


def busy_wat(milliseconds: int) -> str:
    """Answers ``done`` after spinning ``milliseconds`` on the WASI monotonic clock."""
    return _spinning_wat(b"done", milliseconds)


def memory_bomb_wat(*, step_pages: int = 16, abort: bool = True) -> str:
    """Grows its memory ``step_pages`` at a time until refused, then aborts (or answers 200)."""
    after = "unreachable" if abort else ""
    return constant_wat(b"survived", handle_prefix=f"""
    (block $refused
      (loop $grow
        (br_if $refused (i32.eq (memory.grow (i32.const {step_pages})) (i32.const -1)))
        (br $grow)))
    {after}""")


def big_grow_wat(pages: int = 60000) -> str:
    """Asks for ``pages`` at once (refused while the memory is still tiny), then aborts."""
    return constant_wat(b"never", handle_prefix=f"""
    (if (i32.eq (memory.grow (i32.const {pages})) (i32.const -1)) (then unreachable))""")


def recursion_wat() -> str:
    return constant_wat(b"never", extra="""
  (func $down (param i32) (result i32)
    (i32.add (call $down (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))""",
                        handle_prefix="(drop (call $down (i32.const 0)))")


def oob_load_wat() -> str:
    return constant_wat(b"never", handle_prefix="(drop (i32.load (i32.const 0xfffffff0)))")


def giant_response_wat(size: int = 100 * 2**20) -> str:
    """Claims a response of ``size`` bytes (inside its address space, over the limit)."""
    return f"""(module
  (memory (export "memory") 4)
  {ALLOC}
  (func (export "edge_handle") (param i32 i32) (result i64)
    (global.set $next (i32.const 65536))
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const {size}))))
"""


def outside_response_wat() -> str:
    """Returns a response envelope pointer past the end of its memory."""
    return constant_wat(b"x").replace("(i64.const 1024)", "(i64.const 900000)")


def bad_header_wat() -> str:
    evil = response_envelope(200, b"x", [(b"x-evil", b"a\r\nset-cookie: 1")])
    return constant_wat(b"", raw=evil)


def table_bomb_wat() -> str:
    return constant_wat(b"never", extra="(table $t 1 funcref)", handle_prefix="""
    (loop $grow
      (br_if $grow (i32.ne (table.grow $t (ref.null func) (i32.const 10000)) (i32.const -1))))
    unreachable""")


def echo_wat() -> str:
    """Answers with the raw request envelope as its body (tests decode it)."""
    return f"""(module
  (memory (export "memory") 40)
  {ALLOC}
  (func (export "edge_handle") (param $ptr i32) (param $len i32) (result i64)
    (i32.store (i32.const 1024) (i32.const 200))
    (i32.store (i32.const 1028) (i32.const 0))
    (i32.store (i32.const 1032) (local.get $len))
    (memory.copy (i32.const 1036) (local.get $ptr) (local.get $len))
    (global.set $next (i32.const 65536))
    (i64.or (i64.shl (i64.const 1024) (i64.const 32))
            (i64.extend_i32_u (i32.add (local.get $len) (i32.const 12))))))
"""


def output_flood_wat(chunks: int = 64) -> str:
    """Writes ``chunks`` x 16 KiB of ``A`` to stdout, then answers ``ok``."""
    return _wasi_loop_wat(
        b"ok", chunks, pages=4,
        imported='"fd_write" (func $write (param i32 i32 i32 i32) (result i32))',
        setup="""(memory.fill (i32.const 4096) (i32.const 65) (i32.const 16384))
    (i32.store (i32.const 2048) (i32.const 4096))
    (i32.store (i32.const 2052) (i32.const 16384))""",
        call="(call $write (i32.const 1) (i32.const 2048) (i32.const 1) (i32.const 2056))",
    )


def _wasi_loop_wat(body: bytes, times: int, *, pages: int, imported: str, call: str,
                   setup: str = "") -> str:
    """A guest that makes one WASI ``call`` ``times`` times (after ``setup``), then
    answers ``body``; ``imported`` is the import's name and signature."""
    envelope = response_envelope(200, body)
    return f"""(module
  (import "{WASI}" {imported})
  (memory (export "memory") {pages})
  {ALLOC}
  (data (i32.const 1020) "{_data(struct.pack('<I', len(envelope)) + envelope)}")
  (func (export "edge_handle") (param i32 i32) (result i64)
    (local $left i32)
    (local.set $left (i32.const {times}))
    {setup}
    (block $done (loop $more
      (br_if $done (i32.eqz (local.get $left)))
      (local.set $left (i32.sub (local.get $left) (i32.const 1)))
      (drop {call})
      (br $more)))
    {_respond()}))
"""


def env_probe_wat() -> str:
    """Answers with its whole environment block (``NAME=value\\0`` strings)."""
    return f"""(module
  (import "{WASI}" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "{WASI}" "environ_get" (func $get (param i32 i32) (result i32)))
  (memory (export "memory") 4)
  {ALLOC}
  (func (export "edge_handle") (param i32 i32) (result i64)
    (drop (call $sizes (i32.const 512) (i32.const 516)))
    (drop (call $get (i32.const 2048) (i32.const 4096)))
    (i32.store (i32.const 1024) (i32.const 200))
    (i32.store (i32.const 1028) (i32.const 0))
    (i32.store (i32.const 1032) (i32.load (i32.const 516)))
    (memory.copy (i32.const 1036) (i32.const 4096) (i32.load (i32.const 516)))
    (global.set $next (i32.const 65536))
    (i64.or (i64.shl (i64.const 1024) (i64.const 32))
            (i64.extend_i32_u (i32.add (i32.load (i32.const 516)) (i32.const 12))))))
"""


def fs_probe_wat() -> str:
    """Answers with three u32 errnos: fd_prestat_get(3), path_open(3, "etc"), sock_accept(3)."""
    envelope_head = struct.pack("<III", 200, 0, 12)
    return f"""(module
  (import "{WASI}" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "{WASI}" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "{WASI}" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
  (memory (export "memory") 4)
  {ALLOC}
  (data (i32.const 1024) "{_data(envelope_head)}")
  (data (i32.const 3000) "etc")
  (func (export "edge_handle") (param i32 i32) (result i64)
    (i32.store (i32.const 1036) (call $prestat (i32.const 3) (i32.const 2048)))
    (i32.store (i32.const 1040) (call $open (i32.const 3) (i32.const 0) (i32.const 3000)
      (i32.const 3) (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 2048)))
    (i32.store (i32.const 1044) (call $accept (i32.const 3) (i32.const 0) (i32.const 2048)))
    (global.set $next (i32.const 65536))
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 24))))
"""


def importer_wat(module: str, name: str, signature: str = "(func)") -> str:
    """A module importing ``module.name``, which the edge ABI may not grant."""
    return f"""(module
  (import "{module}" "{name}" {signature})
  (memory (export "memory") 1)
  (func (export "edge_alloc") (param i32) (result i32) (i32.const 0))
  (func (export "edge_handle") (param i32 i32) (result i64) (i64.const 0)))"""


def init_trap_wat() -> str:
    """Traps in ``_initialize`` (WASI reactor start-up), before serving anything."""
    return constant_wat(b"never", extra='(func (export "_initialize") unreachable)')


def big_memory_wat(pages: int) -> str:
    """Asks for ``pages`` of memory at instantiation."""
    return constant_wat(b"never").replace('(memory (export "memory") 4)',
                                          f'(memory (export "memory") {pages})')


def wagi_wat(body: str) -> str:
    """A WAGI command module whose ``_start`` runs ``body`` (with $write to stdout)."""
    return f"""(module
  (import "{WASI}" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "{WASI}" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "content-type: text/plain\\n\\nok")
  (func (export "_start") {body}))"""


def wagi_ok_body() -> str:
    return """(i32.store (i32.const 16) (i32.const 1024)) (i32.store (i32.const 20) (i32.const 28))
    (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))"""


def hog_wat(pages: int, milliseconds: int) -> str:
    """Grows by exactly ``pages``, touches every byte, spins ``milliseconds``, answers ``held``.

    With ``pages`` chosen to reach its ``limits.memory`` exactly, an instance
    really holds its whole reservation (benchmarks of the memory budget).
    """
    return _spinning_wat(b"held", milliseconds, before=f"""
    (if (i32.eq (memory.grow (i32.const {pages})) (i32.const -1)) (then unreachable))
    (memory.fill (i32.const 262144) (i32.const 1) (i32.const {pages * 65536}))""")


def sized_wat(body: bytes, size: int) -> str:
    """:func:`constant_wat` answering ``body``, with a data segment that makes the module
    a little over ``size`` bytes (the memory grows to hold it)."""
    pad = size
    pages = 4 + pad // 65536 + 1
    return constant_wat(body, extra=f'(data (i32.const 262144) "{"a" * pad}")').replace(
        '(memory (export "memory") 4)', f'(memory (export "memory") {pages})')
