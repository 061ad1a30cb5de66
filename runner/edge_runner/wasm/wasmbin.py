"""Reading and rewriting core wasm binaries: LEB128, instructions, sections.

What the load-time rewrites share (:mod:`edge_runner.wasm.growprobe`): the
decoder knows every instruction wasmtime accepts by default (MVP,
sign-extension, bulk memory, reference types, SIMD and relaxed SIMD, threads,
tail calls, exceptions, wide arithmetic) and raises :class:`Unsupported` for
anything else (GC types, memory64, an unknown opcode), so a module it cannot
read is never half-rewritten.  Pure functions on ``bytes``; no wasmtime here.
"""

from __future__ import annotations

import typing

MAGIC = b"\x00asm\x01\x00\x00\x00"
TYPE, IMPORT, FUNCTION, TABLE, MEMORY, GLOBAL, EXPORT, START, CODE, TAG = (
    1, 2, 3, 4, 5, 6, 7, 8, 10, 13)
# Where a new global / export section goes: after every section that must precede it.
_BEFORE_GLOBAL = frozenset({TYPE, IMPORT, FUNCTION, TABLE, MEMORY, TAG})
_BEFORE_EXPORT = _BEFORE_GLOBAL | {GLOBAL}
#: Value types of numbers (i32, i64, f32, f64, v128): what a host can save and restore.
NUMERIC = frozenset({0x7F, 0x7E, 0x7D, 0x7C, 0x7B})
#: Instructions whose effect outlives a call in something other than linear memory
#: and globals: they change a table or drop a segment.
_LASTING_FC = {9: "data.drop", 12: "table.init", 13: "elem.drop", 14: "table.copy",
               15: "table.grow", 17: "table.fill"}


class Unsupported(ValueError):
    """The module uses something the decoder does not know; leave it as it is."""


# -- LEB128 ------------------------------------------------------------------------------


def uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sleb(value: int) -> bytes:
    """Signed LEB128 (the immediate of ``i32.const``)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40):
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def read_uleb(buf: bytes, pos: int) -> tuple[int, int]:
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


def skip_leb(buf: bytes, pos: int) -> int:
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


def skip_valtype(buf: bytes, pos: int) -> int:
    if buf[pos] in (0x63, 0x64):  # (ref null? heaptype)
        return skip_leb(buf, pos + 1)
    return pos + 1


def _skip_blocktype(buf: bytes, pos: int) -> int:
    if buf[pos] in (0x63, 0x64):
        return skip_leb(buf, pos + 1)
    return skip_leb(buf, pos)  # 0x40, a one-byte valtype or an s33 type index


def _skip_memarg(buf: bytes, pos: int) -> int:
    flags, pos = read_uleb(buf, pos)
    if flags & 0x40:  # multi-memory: explicit memory index
        pos = skip_leb(buf, pos)
    return skip_leb(buf, pos)


def _skip_prefixed(kind: int, buf: bytes, pos: int) -> int:
    sub, pos = read_uleb(buf, pos)
    if kind == _FC:
        count = _FC_IMMEDIATES.get(sub)
        if count is None:
            raise Unsupported(f"opcode 0xfc {sub}")
        for _ in range(count):
            pos = skip_leb(buf, pos)
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
        return skip_leb(body, pos)
    if kind == _BLOCK:
        return _skip_blocktype(body, pos)
    if kind == _MEMARG:
        return _skip_memarg(body, pos)
    if kind == _U32X2:
        return skip_leb(body, skip_leb(body, pos))
    if kind == _F32:
        return pos + 4
    if kind == _F64:
        return pos + 8
    if kind == _BR_TABLE:
        targets, pos = read_uleb(body, pos)
        for _ in range(targets + 1):
            pos = skip_leb(body, pos)
        return pos
    if kind == _SELECT_T:
        types, pos = read_uleb(body, pos)
        for _ in range(types):
            pos = skip_valtype(body, pos)
        return pos
    if kind == _TRY_TABLE:
        pos = _skip_blocktype(body, pos)
        catches, pos = read_uleb(body, pos)
        for _ in range(catches):
            catch_kind = body[pos]
            pos = skip_leb(body, pos + 1)
            if catch_kind in (0, 1):  # catch / catch_ref: tag, then label
                pos = skip_leb(body, pos)
        return pos
    return _skip_prefixed(kind, body, pos)


def rewrite_body(body: bytes, grow: bytes, size: bytes | None = None
                 ) -> tuple[bytes, int, str | None]:
    """One function body with ``memory.grow 0`` replaced by ``grow`` (and, if given,
    ``memory.size 0`` by ``size``); returns (body, grows replaced, the first lasting
    instruction found (see ``_LASTING_FC``, ``table.set``) or None)."""
    count, pos = read_uleb(body, 0)
    for _ in range(count):
        pos = skip_valtype(body, skip_leb(body, pos))
    out: list[bytes] = []
    copied = sites = 0
    lasting: str | None = None
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
        if kind == _GROW or (op == 0x3F and size is not None):
            memory, after = read_uleb(body, pos)
            if memory == 0:
                out.append(body[copied:pos - 1])
                out.append(grow if kind == _GROW else typing.cast(bytes, size))
                copied = after
                sites += kind == _GROW
            pos = after
            continue
        if lasting is None:
            if op == 0x26:
                lasting = "table.set"
            elif kind == _FC:
                lasting = _LASTING_FC.get(read_uleb(body, pos)[0])
        pos = _skip_immediates(kind, body, pos)
    if pos != end:
        raise Unsupported("a function body ends inside an instruction")
    if not out:
        return body, 0, lasting
    out.append(body[copied:])
    return b"".join(out), sites, lasting


def skip_const_expr(buf: bytes, pos: int) -> int:
    """Position after a constant expression (a global's initializer) and its ``end``."""
    while True:
        op = buf[pos]
        kind = _OPCODES.get(op)
        pos += 1
        if op == 0x0B:
            return pos
        if kind is None:
            raise Unsupported(f"opcode {op:#04x} in a constant expression")
        if kind not in (_NONE, _GROW):
            pos = _skip_immediates(kind, buf, pos)


# -- module structure --------------------------------------------------------------------


def sections(wasm: bytes) -> list[tuple[int, bytes]]:
    """(section id, payload) of each section, in order (custom sections too)."""
    if not wasm.startswith(MAGIC):
        raise Unsupported("not a core wasm module (version 1)")
    found = []
    pos = len(MAGIC)
    while pos < len(wasm):
        section_id = wasm[pos]
        size, pos = read_uleb(wasm, pos + 1)
        found.append((section_id, wasm[pos:pos + size]))
        pos += size
    return found


def count_types(payload: bytes) -> int:
    """Function types defined (raises :class:`Unsupported` for GC types)."""
    count, pos = read_uleb(payload, 0)
    for _ in range(count):
        if payload[pos] != 0x60:
            raise Unsupported("GC type definitions")
        pos += 1
        for _ in range(2):  # params, results
            n, pos = read_uleb(payload, pos)
            for _ in range(n):
                pos = skip_valtype(payload, pos)
    return count


def skip_limits(payload: bytes, pos: int) -> int:
    """Position after a table's or memory's limits (32-bit only)."""
    flags = payload[pos]
    if flags & 0x04:
        raise Unsupported("64-bit memory or table")
    pos = skip_leb(payload, pos + 1)
    return skip_leb(payload, pos) if flags & 0x01 else pos


def count_imports(payload: bytes) -> tuple[int, int, int]:
    """(imported functions, imported globals, other imports: tables, memories, tags)."""
    count, pos = read_uleb(payload, 0)
    functions = globals_ = others = 0
    for _ in range(count):
        for _ in range(2):  # module name, field name
            length, pos = read_uleb(payload, pos)
            pos += length
        kind = payload[pos]
        pos += 1
        if kind == 0x00:
            functions += 1
            pos = skip_leb(payload, pos)
        elif kind == 0x03:
            globals_ += 1
            pos = skip_valtype(payload, pos) + 1
        elif kind == 0x01:
            others += 1
            pos = skip_limits(payload, skip_valtype(payload, pos))
        elif kind == 0x02:
            others += 1
            pos = skip_limits(payload, pos)
        elif kind == 0x04:
            others += 1
            pos = skip_leb(payload, pos + 1)
        else:
            raise Unsupported(f"import kind {kind}")
    return functions, globals_, others


def memories(payload: bytes) -> list[tuple[int, int]]:
    """(limits flags, initial pages) of each memory a memory section defines."""
    count, pos = read_uleb(payload, 0)
    found = []
    for _ in range(count):
        flags = payload[pos]
        initial = read_uleb(payload, pos + 1)[0]
        pos = skip_limits(payload, pos)
        found.append((flags, initial))
    return found


def globals_of(payload: bytes) -> list[tuple[int, bool]]:
    """(value type, mutable) of each global a global section defines."""
    count, pos = read_uleb(payload, 0)
    found = []
    for _ in range(count):
        valtype = payload[pos]
        pos = skip_valtype(payload, pos)
        found.append((valtype, payload[pos] == 0x01))
        pos = skip_const_expr(payload, pos + 1)
    return found


def append_entries(payload: bytes | None, entries: list[bytes]) -> bytes:
    """A vector section's payload with ``entries`` appended (``payload`` None: a new one)."""
    count, pos = read_uleb(payload, 0) if payload else (0, 0)
    rest = payload[pos:] if payload else b""
    return uleb(count + len(entries)) + rest + b"".join(entries)


def assemble(parts: list[tuple[int, bytes]], new: dict[int, bytes]) -> bytes:
    """Rebuild the module with ``new`` payloads, inserting sections it lacked in order."""
    out = [MAGIC]
    pending = dict(new)

    def emit(section_id: int, payload: bytes) -> None:
        out.append(bytes([section_id]) + uleb(len(payload)) + payload)

    for section_id, payload in parts:
        if section_id != 0:
            # A missing global (export) section goes before the first section that follows it.
            for missing, before in ((GLOBAL, _BEFORE_GLOBAL), (EXPORT, _BEFORE_EXPORT)):
                if missing in pending and section_id not in before and section_id != missing:
                    emit(missing, pending.pop(missing))
        emit(section_id, pending.pop(section_id, payload))
    for missing in (GLOBAL, EXPORT):
        if missing in pending:
            emit(missing, pending.pop(missing))
    return b"".join(out)
