"""The guest's ``fd_write``: stdout and stderr on the calling thread, bounded, paid in fuel.

wasmtime's own WASI output hands every write of up to 4 KiB to a tokio thread,
which calls back into Python for the bytes and wakes the guest's thread again:
about 50 microseconds and four thread switches per 4 KiB.  A guest flooding
stdout from the event loop stalled it for 10-18 ms per request that way, every
switch a chance for a busy CPU to keep the loop waiting.

So the engine's linker shadows ``fd_write``
(:meth:`edge_runner.wasm.engine.WasmEngine.__init__`) with this host function,
called on the guest's own thread through wasmtime's unchecked (raw value)
interface.  It reads the iovecs from the caller's
``memory``, hands at most what the stream still has room for to the
:class:`Streams` of the store (copying nothing beyond that), reports the whole
length as written, and charges the store ``CALL_FUEL`` plus ``IOVEC_FUEL`` per
iovec, roughly the host's time in instructions: output is work the host does for
the guest, and a speculative call on the event loop (:mod:`edge_runner.invoke.pool`)
that writes a lot runs out of its small budget and moves to a worker thread
like one that computes a lot.

Only fds 1 and 2 exist (EBADF for the rest, as before: no preopens); bad
pointers give EFAULT and more than ``MAX_IOVECS`` iovecs EINVAL, as a kernel
would.  The store finds its :class:`Streams` through the store's data: a
wasmtime-py store's data is the Streams itself (:func:`attach`), a
:class:`~edge_runner.wasm.capi.RawStore`'s an integer from :func:`register`.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import struct
import typing
import weakref

import wasmtime

from edge_runner.wasm import capi
from edge_runner.wasm.capi import memory_address, memory_size

log = logging.getLogger("edge_runner.wasm.wasi_output")

#: Fuel one ``fd_write`` call costs (about its host time in wasm instructions).
CALL_FUEL = 10_000
#: Fuel each iovec of a call costs on top.
IOVEC_FUEL = 1_000
#: Iovecs one call may pass (Linux's IOV_MAX); more is EINVAL.
MAX_IOVECS = 1024

_ESUCCESS, _EBADF, _EFAULT, _EINVAL = 0, 8, 21, 28
_U32 = 0xFFFFFFFF


class Stream(typing.Protocol):
    """Where one fd's bytes go."""

    def room(self) -> int:
        """Bytes the stream still keeps; the rest of a write is only counted."""

    def write(self, kept: bytes, size: int) -> None:
        """A write of ``size`` bytes, of which the first ``len(kept)`` are ``kept``."""


class Streams:
    """A store's stdout and stderr; pass it as the store's data (see :func:`attach`)."""

    __slots__ = ("__weakref__", "stderr", "stdout")

    def __init__(self, stdout: Stream, stderr: Stream) -> None:
        self.stdout = stdout
        self.stderr = stderr


#: Store data id -> that store's Streams (held by the store itself, so an entry
#: lives as long as its store; a later store reusing the id registers anew).
_BY_STORE: weakref.WeakValueDictionary[int, Streams] = weakref.WeakValueDictionary()


#: Keys :func:`register` hands out: far above wasmtime-py's slab ids (small integers, the
#: data of a wasmtime-py store), never reused.
_raw_keys = itertools.count(1 << 48)


def attach(store: wasmtime.Store) -> None:
    """Route ``store``'s guest output to the :class:`Streams` given as its data."""
    streams = store.data()
    if not isinstance(streams, Streams):
        raise TypeError("the store's data must be its Streams")
    _BY_STORE[capi.store_data_key(store)] = streams


def register(streams: Streams) -> int:
    """A new store data key for a :class:`~edge_runner.wasm.capi.RawStore` whose output
    goes to ``streams`` (valid while ``streams`` lives: the store must hold it)."""
    key = next(_raw_keys)
    _BY_STORE[key] = streams
    return key


_caller_context = capi.caller_context
_context_data = capi.context_get_data
_export_get = capi.caller_export_get
_get_fuel = capi.get_fuel
_set_fuel = capi.set_fuel
_trap_new = capi.trap_new
_MEMORY = b"memory"
_MEMORY_KIND = capi.EXTERN_MEMORY


def _fd_write(caller: ctypes.c_void_p, values: ctypes.Array[capi.ValRaw]) -> int:
    """``fd_write(fd, iovs, iovs_len, nwritten) -> errno``."""
    context = _caller_context(caller)
    streams = _BY_STORE.get(int(_context_data(context) or 0))
    fd = values[0].i32
    if streams is None or fd not in (1, 2):
        return _EBADF
    stream = streams.stdout if fd == 1 else streams.stderr
    found = capi.Extern()
    if not _export_get(caller, _MEMORY, len(_MEMORY), ctypes.byref(found)) or (
            typing.cast(int, found.kind) != _MEMORY_KIND):
        return _EFAULT
    memory = ctypes.byref(found.of.memory)
    base, length = memory_address(context, memory) or 0, memory_size(context, memory)
    iovs, count, out = values[1].i32 & _U32, values[2].i32 & _U32, values[3].i32 & _U32
    if count > MAX_IOVECS:
        return _EINVAL
    if iovs + 8 * count > length or out + 4 > length:
        return _EFAULT
    fields = struct.unpack_from(f"<{2 * count}I", ctypes.string_at(base + iovs, 8 * count))
    total, room, kept = 0, stream.room(), []
    for ptr, size in zip(fields[::2], fields[1::2], strict=True):
        if ptr + size > length:
            return _EFAULT
        total += size
        if room > 0 and size:
            take = min(size, room)
            kept.append(ctypes.string_at(base + ptr, take))
            room -= take
    if total > _U32:
        return _EINVAL
    stream.write(b"".join(kept), total)
    _charge(context, CALL_FUEL + IOVEC_FUEL * count)
    ctypes.memmove(base + out, struct.pack("<I", total), 4)
    return _ESUCCESS


def _charge(context: object, fuel: int) -> None:
    """Take ``fuel`` from the store (down to 0: the guest then traps ``out of fuel``)."""
    left = ctypes.c_uint64()
    if _get_fuel(context, ctypes.byref(left)):
        return  # fuel metering off (never in this runner's engine)
    _set_fuel(context, max(0, left.value - fuel))


def _host_fd_write(
    _env: int, caller: ctypes.c_void_p, values: ctypes.Array[capi.ValRaw], _count: int
) -> int:
    """The callback wasmtime calls: the result goes into ``values[0]``, a trap is returned."""
    try:
        values[0].i32 = _fd_write(caller, values)
        return 0
    except Exception:  # a Python error must not unwind through wasm frames
        log.exception("fd_write failed")
        message = b"host fd_write failed"
        return ctypes.cast(_trap_new(message, len(message)), ctypes.c_void_p).value or 0


#: The C function pointer wasmtime calls (kept alive with this module).
_callback: typing.Any = capi.UncheckedCallback(_host_fd_write)


def define_fd_write(linker: wasmtime.Linker, module: str) -> None:
    """Shadow ``module.fd_write`` in ``linker`` (which must allow shadowing)."""
    i32 = wasmtime.ValType.i32()
    kind = wasmtime.FuncType([i32] * 4, [i32])
    capi.define_unchecked(linker, module, "fd_write", kind, _callback)
