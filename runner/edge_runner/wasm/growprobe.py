"""Load-time module instrumentation: refused growths made observable, renewable instances.

**The grow probe.**  wasmtime caps an instance's linear memory with a store
limit (:meth:`edge_runner.wasm.engine.WasmEngine.new_store`); at the cap
``memory.grow`` returns -1 and nothing else happens, so the host cannot tell "the
guest hit its memory limit" from "the guest trapped" after the fact.  Guessing
from the memory size at trap time is wrong both ways (a refused 100-page grow
leaves the memory far below the cap; an unrelated trap can happen near it).  So
:func:`instrument` rewrites the module once, when the engine compiles it: every
``memory.grow`` of memory 0 becomes a call to an appended function that does the
same ``memory.grow`` and, when it returns -1, sets an appended mutable global to
1.  That global is exported as :data:`PROBE_EXPORT`; the executors
(:mod:`edge_runner.abi.edge`, :mod:`edge_runner.abi.wagi`) read it after a call:
set means the store limit refused a growth during that instance's life, which is
reason ``memory`` (502) and the instance is discarded.

**Renewal** (:mod:`edge_runner.wasm.renewal`).  With ``pool.reuse: false`` every
request must find an instance as new.  When nothing of a module but its linear
memory and its globals can outlive a call, the rewrite also lets the host put an
instance back into the state it was instantiated in, instead of making another:

- every mutable global is exported as ``edge-runner:renew:<index>`` (the host
  reads them after instantiation and writes them back; not the probe's: once
  set, the instance has failed and is never renewed);
- the memory's size as the guest sees it becomes a global: ``memory.size`` reads
  it, and the grow function adds to it, growing the real memory only past its
  current size.  The host sets it back to the initial size (and empties the
  memory), so ``memory.size`` and ``memory.grow`` answer each request as they
  answer a new instance (memory a memory cannot give back stays allocated,
  zeroed, for the next requests to grow into);
- the export :data:`RENEWABLE_EXPORT` (memory 0 again) marks the module.

That holds for a module with one memory of its own (not imported, not shared),
no imported globals, tables or tags, no start function, numeric mutable
globals only, and no instruction that changes a table or drops a segment
(``table.set``/``grow``/``fill``/``copy``/``init``, ``elem.drop``, ``data.drop``).
Other modules get the probe alone, and their instances are made anew.

Nothing else in the module changes: function, type and global indices are kept
(everything new is appended), so names, the start function and element
segments stay valid.  A module the decoder (:mod:`.wasmbin`) cannot read is
compiled as it is, without a probe; such a module's memory-limit traps are then
reported as plain traps, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_runner.wasm.wasmbin import (
    CODE,
    EXPORT,
    FUNCTION,
    GLOBAL,
    IMPORT,
    MEMORY,
    NUMERIC,
    START,
    TYPE,
    Unsupported,
    append_entries,
    assemble,
    count_imports,
    count_types,
    globals_of,
    memories,
    read_uleb,
    rewrite_body,
    sections,
    sleb,
    uleb,
)

__all__ = ["PROBE_EXPORT", "RENEWABLE_EXPORT", "RENEW_PREFIX", "Instrumented",
           "Unsupported", "instrument"]

PROBE_EXPORT = "edge-runner:memory-grow-refused"
RENEW_PREFIX = "edge-runner:renew:"
RENEWABLE_EXPORT = "edge-runner:renewable"
#: Bump when the rewrite changes: cached compiled artifacts depend on it.
VERSION = 2


@dataclass(frozen=True, slots=True)
class Instrumented:
    wasm: bytes
    #: Name of the exported i32 global that turns 1 on a refused growth; None = no probe.
    probe: str | None
    #: ``memory.grow`` instructions rewritten.
    sites: int
    #: Export names of the globals to restore when renewing an instance; None: its
    #: instances cannot be renewed (``why_not`` says why).
    renewal: tuple[str, ...] | None = None
    why_not: str = ""


def _probe_body(refused: int) -> bytes:
    code = (
        b"\x01\x01\x7f"                       # one extra local: i32
        b"\x20\x00\x40\x00\x22\x01"           # local.get 0; memory.grow 0; local.tee 1
        b"\x41\x7f\x46\x04\x40"               # i32.const -1; i32.eq; if
        b"\x41\x01\x24" + uleb(refused) +     # i32.const 1; global.set $refused
        b"\x0b\x20\x01\x0b"                   # end; local.get 1; end
    )
    return uleb(len(code)) + code


def _virtual_grow_body(refused: int, pages: int) -> bytes:
    """``grow(n)`` on the guest's view of the size (global ``pages``): the real memory
    grows only by what it lacks; a refusal sets ``refused`` and returns -1."""
    code = (
        b"\x02\x01\x7f\x01\x7e"               # locals: $old i32, $want i64
        b"\x23" + uleb(pages) + b"\x21\x01"   # old = pages
        b"\x20\x01\xad\x20\x00\xad\x7c\x22\x02"  # want = u64(old) + u64(n)
        b"\x3f\x00\xad\x56\x04\x40"           # if want > u64(memory.size):
        b"\x20\x02\x3f\x00\xad\x7d\xa7"       #   i32(want - memory.size)
        b"\x40\x00\x41\x7f\x46\x04\x40"       #   memory.grow 0; == -1; if:
        b"\x41\x01\x24" + uleb(refused) +     #     refused = 1
        b"\x41\x7f\x0f\x0b\x0b"               #     return -1; end; end
        b"\x20\x02\xa7\x24" + uleb(pages) +   # pages = i32(want)
        b"\x20\x01\x0b"                       # return old
    )
    return uleb(len(code)) + code


def _not_renewable(payloads: dict[int, bytes], imported: tuple[int, int, int],
                   own: list[tuple[int, int]], globals_: list[tuple[int, bool]]) -> str:
    """Why instances of this module cannot be renewed ("" if they can, code aside)."""
    if imported[1] or imported[2]:
        return "it imports globals, tables, memories or tags"
    if len(own) != 1 or own[0][0] & 0x02:
        return "it has no memory of its own, more than one, or a shared one"
    if START in payloads:
        return "it has a start function"
    if any(mutable and valtype not in NUMERIC for valtype, mutable in globals_):
        return "it has a mutable reference global"
    return ""


def _rewrite_code(code: bytes, grow: bytes, size: bytes | None
                  ) -> tuple[list[bytes], int, str]:
    """Every body rewritten; (bodies with their sizes, grows, first lasting instruction)."""
    count, pos = read_uleb(code, 0)
    bodies = []
    sites = 0
    lasting = ""
    for _ in range(count):
        length, pos = read_uleb(code, pos)
        body, found, instruction = rewrite_body(code[pos:pos + length], grow, size)
        pos += length
        sites += found
        lasting = lasting or instruction or ""
        bodies.append(uleb(len(body)) + body)
    return bodies, sites, lasting


def instrument(wasm: bytes) -> Instrumented:
    """Rewrite ``wasm`` with the probe (if it grows memory) and for renewal (if it can).

    Raises :class:`Unsupported` for modules the decoder cannot read.  A module that
    neither grows its memory nor can be renewed is returned as it is.
    """
    parts = sections(wasm)
    payloads = {sid: body for sid, body in parts if sid != 0}
    if CODE not in payloads or TYPE not in payloads:
        return Instrumented(wasm, None, 0, None, "it has no code")
    type_index = count_types(payloads[TYPE])
    imported = count_imports(payloads[IMPORT]) if IMPORT in payloads else (0, 0, 0)
    globals_ = globals_of(payloads[GLOBAL]) if GLOBAL in payloads else []
    own = memories(payloads[MEMORY]) if MEMORY in payloads else []  # refuses 64-bit ones
    helper_index = imported[0] + read_uleb(payloads.get(FUNCTION, b"\x00"), 0)[0]
    refused = imported[1] + len(globals_)
    pages = refused + 1
    why_not = _not_renewable(payloads, imported, own, globals_)
    grow = b"\x10" + uleb(helper_index)
    size = None if why_not else b"\x23" + uleb(pages)
    bodies, sites, lasting = _rewrite_code(payloads[CODE], grow, size)
    if lasting and not why_not:
        why_not = f"it uses {lasting}"
        bodies, sites, _ = _rewrite_code(payloads[CODE], grow, None)
    if why_not and not sites:
        return Instrumented(wasm, None, 0, None, why_not)

    exports: list[bytes] = []
    new: dict[int, bytes] = {}
    renewal: tuple[str, ...] | None = None
    if sites:
        helper = _probe_body(refused) if why_not else _virtual_grow_body(refused, pages)
        added = [b"\x7f\x01\x41\x00\x0b"]  # $refused: i32, mutable, 0
        if not why_not:  # $pages: i32, mutable, the memory's initial size
            added.append(b"\x7f\x01\x41" + sleb(own[0][1]) + b"\x0b")
        exports.append(_export(PROBE_EXPORT, 0x03, refused))
        new = {
            TYPE: append_entries(payloads[TYPE], [b"\x60\x01\x7f\x01\x7f"]),
            FUNCTION: append_entries(payloads.get(FUNCTION), [uleb(type_index)]),
            GLOBAL: append_entries(payloads.get(GLOBAL), added),
            CODE: uleb(len(bodies) + 1) + b"".join(bodies) + helper,
        }
    if not why_not:
        # Global indices: a renewable module imports no global, so its own start at 0.
        mutable = [i for i, (_, is_mutable) in enumerate(globals_) if is_mutable]
        mutable += [pages] if sites else []  # not $refused: set, it fails the instance
        renewal = tuple(f"{RENEW_PREFIX}{index}" for index in mutable)
        exports += [_export(name, 0x03, index) for name, index in zip(renewal, mutable,
                                                                        strict=True)]
        exports.append(_export(RENEWABLE_EXPORT, 0x02, 0))
    new[EXPORT] = append_entries(payloads.get(EXPORT), exports)
    probe = PROBE_EXPORT if sites else None
    return Instrumented(assemble(parts, new), probe, sites, renewal, why_not)


def _export(name: str, kind: int, index: int) -> bytes:
    encoded = name.encode()
    return uleb(len(encoded)) + encoded + bytes([kind]) + uleb(index)
