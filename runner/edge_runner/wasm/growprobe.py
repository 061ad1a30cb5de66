"""Make a refused ``memory.grow`` observable: module instrumentation at load time.

wasmtime caps an instance's linear memory with a store limit
(:meth:`edge_runner.wasm.engine.WasmEngine.new_store`); at the cap ``memory.grow``
returns -1 and nothing else happens, so the host cannot tell "the guest hit its
memory limit" from "the guest trapped" after the fact.  Guessing from the
memory size at trap time is wrong both ways (a refused 100-page grow leaves the
memory far below the cap; an unrelated trap can happen near it).

So :func:`instrument` rewrites the module once, when the engine compiles it:
every ``memory.grow`` of memory 0 becomes a call to an appended function that
does the same ``memory.grow`` and, when it returns -1, sets an appended mutable
global to 1.  That global is exported as :data:`PROBE_EXPORT`; the executors
(:mod:`edge_runner.abi.edge`, :mod:`edge_runner.abi.wagi`) read it after a call:
set means the store limit refused a growth during that instance's life, which
is reason ``memory`` (502) and the instance is discarded.  Nothing else in the
module changes: function, type and global indices are kept (everything new is
appended), so names, the start function and element segments stay valid.

The decoder knows every instruction wasmtime accepts by default (MVP,
sign-extension, bulk memory, reference types, SIMD and relaxed SIMD, threads,
tail calls, exceptions, wide arithmetic).  A module it cannot read (GC types,
memory64, an unknown opcode) is compiled as it is, without a probe; such a
module's memory-limit traps are then reported as plain traps, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

PROBE_EXPORT = "edge-runner:memory-grow-refused"
#: Bump when the rewrite changes: cached compiled artifacts depend on it.
VERSION = 1

_MAGIC = b"\x00asm\x01\x00\x00\x00"
_TYPE, _IMPORT, _FUNCTION, _MEMORY, _GLOBAL, _EXPORT, _CODE, _TAG = 1, 2, 3, 5, 6, 7, 10, 13
# Where a new global / export section goes: after every section that must precede it.
_BEFORE_GLOBAL = frozenset({_TYPE, _IMPORT, _FUNCTION, 4, _MEMORY, _TAG})
_BEFORE_EXPORT = _BEFORE_GLOBAL | {_GLOBAL}


class Unsupported(ValueError):
    """The module uses something the decoder does not know; compile it unprobed."""


@dataclass(frozen=True, slots=True)
class Instrumented:
    wasm: bytes
    #: Name of the exported i32 global that turns 1 on a refused growth; None = no probe.
    probe: str | None
    #: ``memory.grow`` instructions rewritten.
    sites: int


# -- LEB128 ------------------------------------------------------------------------------


def _uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_uleb(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise Unsupported("truncated LEB128")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _skip_leb(buf: bytes, pos: int) -> int:
    while buf[pos] & 0x80:
        pos += 1
    return pos + 1


# -- instruction decoding ----------------------------------------------------------------

_NONE, _BLOCK, _U32, _U32X2, _BR_TABLE, _SELECT_T, _TRY_TABLE = range(7)
_MEMARG, _GROW, _SLEB, _F32, _F64, _HEAP, _FC, _FD, _FE = range(7, 16)
_OPCODES: dict[int, int] = {
    **dict.fromkeys((0x00, 0x01, 0x05, 0x0A, 0x0B, 0x0F, 0x19, 0x1A, 0x1B, 0xD1, 0xD3, 0xD4),
                    _NONE),
    **dict.fromkeys(range(0x45, 0xC5), _NONE),
    **dict.fromkeys((0x02, 0x03, 0x04, 0x06), _BLOCK),
    **dict.fromkeys((0x07, 0x08, 0x09, 0x0C, 0x0D, 0x10, 0x12, 0x14, 0x15, 0x18, 0x25, 0x26,
                     0x3F, 0xD2, 0xD5, 0xD6), _U32),
    **dict.fromkeys(range(0x20, 0x25), _U32),
    0x11: _U32X2, 0x13: _U32X2, 0x0E: _BR_TABLE, 0x1C: _SELECT_T, 0x1F: _TRY_TABLE,
    **dict.fromkeys(range(0x28, 0x3F), _MEMARG),
    0x40: _GROW, 0x41: _SLEB, 0x42: _SLEB, 0x43: _F32, 0x44: _F64, 0xD0: _HEAP,
    0xFC: _FC, 0xFD: _FD, 0xFE: _FE,
}
_FC_IMMEDIATES = {**dict.fromkeys(range(8), 0), 8: 2, 9: 1, 10: 2, 11: 1, 12: 2, 13: 1, 14: 2,
                  15: 1, 16: 1, 17: 1, 18: 1, **dict.fromkeys(range(19, 23), 0)}


def _skip_valtype(buf: bytes, pos: int) -> int:
    if buf[pos] in (0x63, 0x64):  # (ref null? heaptype)
        return _skip_leb(buf, pos + 1)
    return pos + 1


def _skip_blocktype(buf: bytes, pos: int) -> int:
    if buf[pos] in (0x63, 0x64):
        return _skip_leb(buf, pos + 1)
    return _skip_leb(buf, pos)  # 0x40, a one-byte valtype or an s33 type index


def _skip_memarg(buf: bytes, pos: int) -> int:
    flags, pos = _read_uleb(buf, pos)
    if flags & 0x40:  # multi-memory: explicit memory index
        pos = _skip_leb(buf, pos)
    return _skip_leb(buf, pos)


def _skip_prefixed(kind: int, buf: bytes, pos: int) -> int:
    sub, pos = _read_uleb(buf, pos)
    if kind == _FC:
        count = _FC_IMMEDIATES.get(sub)
        if count is None:
            raise Unsupported(f"opcode 0xfc {sub}")
        for _ in range(count):
            pos = _skip_leb(buf, pos)
        return pos
    if kind == _FD:
        if sub <= 11:
            return _skip_memarg(buf, pos)
        if sub in (12, 13):
            return pos + 16
        if 21 <= sub <= 34:
            return pos + 1
        if 84 <= sub <= 91:
            return _skip_memarg(buf, pos) + 1
        if sub in (92, 93):
            return _skip_memarg(buf, pos)
        if sub <= 0x113:
            return pos
        raise Unsupported(f"opcode 0xfd {sub}")
    if sub == 0x03:  # atomic.fence
        return pos + 1
    if sub <= 0x02 or 0x10 <= sub <= 0x4E:
        return _skip_memarg(buf, pos)
    raise Unsupported(f"opcode 0xfe {sub}")


def _skip_immediates(kind: int, body: bytes, pos: int) -> int:
    """Position after the immediates of an instruction of ``kind`` (not _NONE/_GROW)."""
    if kind in (_U32, _SLEB, _HEAP):
        return _skip_leb(body, pos)
    if kind == _BLOCK:
        return _skip_blocktype(body, pos)
    if kind == _MEMARG:
        return _skip_memarg(body, pos)
    if kind == _U32X2:
        return _skip_leb(body, _skip_leb(body, pos))
    if kind == _F32:
        return pos + 4
    if kind == _F64:
        return pos + 8
    if kind == _BR_TABLE:
        targets, pos = _read_uleb(body, pos)
        for _ in range(targets + 1):
            pos = _skip_leb(body, pos)
        return pos
    if kind == _SELECT_T:
        types, pos = _read_uleb(body, pos)
        for _ in range(types):
            pos = _skip_valtype(body, pos)
        return pos
    if kind == _TRY_TABLE:
        pos = _skip_blocktype(body, pos)
        catches, pos = _read_uleb(body, pos)
        for _ in range(catches):
            catch_kind = body[pos]
            pos = _skip_leb(body, pos + 1)
            if catch_kind in (0, 1):  # catch / catch_ref: tag, then label
                pos = _skip_leb(body, pos)
        return pos
    return _skip_prefixed(kind, body, pos)


def _rewrite_body(body: bytes, call: bytes) -> tuple[bytes, int]:
    """Replace ``memory.grow 0`` in one function body by ``call``; returns (body, count)."""
    count, pos = _read_uleb(body, 0)
    for _ in range(count):
        pos = _skip_valtype(body, _skip_leb(body, pos))
    out: list[bytes] = []
    copied = sites = 0
    end = len(body)
    opcodes = _OPCODES
    while pos < end:
        op = body[pos]
        kind = opcodes.get(op)
        pos += 1
        if kind is None:
            raise Unsupported(f"opcode {op:#04x}")
        if kind == _NONE:
            continue
        if kind == _GROW:
            memory, after = _read_uleb(body, pos)
            if memory == 0:
                out.append(body[copied:pos - 1])
                out.append(call)
                copied = after
                sites += 1
            pos = after
        else:
            pos = _skip_immediates(kind, body, pos)
    if pos != end:
        raise Unsupported("a function body ends inside an instruction")
    if not sites:
        return body, 0
    out.append(body[copied:])
    return b"".join(out), sites


# -- module structure --------------------------------------------------------------------


def _sections(wasm: bytes) -> list[tuple[int, bytes]]:
    if not wasm.startswith(_MAGIC):
        raise Unsupported("not a core wasm module (version 1)")
    sections = []
    pos = len(_MAGIC)
    while pos < len(wasm):
        section_id = wasm[pos]
        size, pos = _read_uleb(wasm, pos + 1)
        sections.append((section_id, wasm[pos:pos + size]))
        pos += size
    return sections


def _count_types(payload: bytes) -> int:
    count, pos = _read_uleb(payload, 0)
    for _ in range(count):
        if payload[pos] != 0x60:
            raise Unsupported("GC type definitions")
        pos += 1
        for _ in range(2):  # params, results
            n, pos = _read_uleb(payload, pos)
            for _ in range(n):
                pos = _skip_valtype(payload, pos)
    return count


def _skip_limits(payload: bytes, pos: int) -> int:
    flags = payload[pos]
    if flags & 0x04:
        raise Unsupported("64-bit memory or table")
    pos = _skip_leb(payload, pos + 1)
    return _skip_leb(payload, pos) if flags & 0x01 else pos


def _count_imports(payload: bytes) -> tuple[int, int]:
    """(imported functions, imported globals)."""
    count, pos = _read_uleb(payload, 0)
    functions = globals_ = 0
    for _ in range(count):
        for _ in range(2):  # module name, field name
            length, pos = _read_uleb(payload, pos)
            pos += length
        kind = payload[pos]
        pos += 1
        if kind == 0x00:
            functions += 1
            pos = _skip_leb(payload, pos)
        elif kind == 0x01:
            pos = _skip_limits(payload, _skip_valtype(payload, pos))
        elif kind == 0x02:
            pos = _skip_limits(payload, pos)
        elif kind == 0x03:
            globals_ += 1
            pos = _skip_valtype(payload, pos) + 1
        elif kind == 0x04:
            pos = _skip_leb(payload, pos + 1)
        else:
            raise Unsupported(f"import kind {kind}")
    return functions, globals_


def _append_entries(payload: bytes | None, entries: list[bytes]) -> bytes:
    count, pos = _read_uleb(payload, 0) if payload else (0, 0)
    rest = payload[pos:] if payload else b""
    return _uleb(count + len(entries)) + rest + b"".join(entries)


def _check_memories(payload: bytes) -> None:
    count, pos = _read_uleb(payload, 0)
    for _ in range(count):
        pos = _skip_limits(payload, pos)


def _helper_body(global_index: int) -> bytes:
    code = (
        b"\x01\x01\x7f"                       # one extra local: i32
        b"\x20\x00\x40\x00\x22\x01"           # local.get 0; memory.grow 0; local.tee 1
        b"\x41\x7f\x46\x04\x40"               # i32.const -1; i32.eq; if
        b"\x41\x01\x24" + _uleb(global_index) +  # i32.const 1; global.set $refused
        b"\x0b\x20\x01\x0b"                   # end; local.get 1; end
    )
    return _uleb(len(code)) + code


def instrument(wasm: bytes) -> Instrumented:
    """Rewrite ``wasm`` so refused growths set the :data:`PROBE_EXPORT` global.

    Raises :class:`Unsupported` for modules the decoder cannot read.  A module
    without any ``memory.grow`` is returned as it is, with no probe (it cannot
    grow, so it can never hit the limit after instantiation).
    """
    sections = _sections(wasm)
    payloads = {sid: body for sid, body in sections if sid != 0}
    if _CODE not in payloads or _TYPE not in payloads:
        return Instrumented(wasm, None, 0)
    if _MEMORY in payloads:
        _check_memories(payloads[_MEMORY])
    type_index = _count_types(payloads[_TYPE])
    imported_functions, imported_globals = (
        _count_imports(payloads[_IMPORT]) if _IMPORT in payloads else (0, 0)
    )
    defined_functions = _read_uleb(payloads.get(_FUNCTION, b"\x00"), 0)[0]
    defined_globals = _read_uleb(payloads[_GLOBAL], 0)[0] if _GLOBAL in payloads else 0
    helper_index = imported_functions + defined_functions
    global_index = imported_globals + defined_globals
    call = b"\x10" + _uleb(helper_index)

    code = payloads[_CODE]
    count, pos = _read_uleb(code, 0)
    bodies = []
    sites = 0
    for _ in range(count):
        size, pos = _read_uleb(code, pos)
        body, found = _rewrite_body(code[pos:pos + size], call)
        pos += size
        sites += found
        bodies.append(_uleb(len(body)) + body)
    if not sites:
        return Instrumented(wasm, None, 0)

    name = PROBE_EXPORT.encode()
    new = {
        _TYPE: _append_entries(payloads[_TYPE], [b"\x60\x01\x7f\x01\x7f"]),
        _FUNCTION: _append_entries(payloads.get(_FUNCTION), [_uleb(type_index)]),
        _GLOBAL: _append_entries(payloads.get(_GLOBAL), [b"\x7f\x01\x41\x00\x0b"]),
        _EXPORT: _append_entries(
            payloads.get(_EXPORT), [_uleb(len(name)) + name + b"\x03" + _uleb(global_index)]
        ),
        _CODE: _uleb(count + 1) + b"".join(bodies) + _helper_body(global_index),
    }
    return Instrumented(_assemble(sections, new), PROBE_EXPORT, sites)


def _assemble(sections: list[tuple[int, bytes]], new: dict[int, bytes]) -> bytes:
    """Rebuild the module with ``new`` payloads, inserting sections it lacked in order."""
    out = [_MAGIC]
    pending = dict(new)

    def emit(section_id: int, payload: bytes) -> None:
        out.append(bytes([section_id]) + _uleb(len(payload)) + payload)

    for section_id, payload in sections:
        if section_id != 0:
            # A missing global (export) section goes before the first section that follows it.
            for missing, before in ((_GLOBAL, _BEFORE_GLOBAL), (_EXPORT, _BEFORE_EXPORT)):
                if missing in pending and section_id not in before and section_id != missing:
                    emit(missing, pending.pop(missing))
        emit(section_id, pending.pop(section_id, payload))
    for missing in (_GLOBAL, _EXPORT):
        if missing in pending:
            emit(missing, pending.pop(missing))
    return b"".join(out)
