"""Renewing an instance: its memory and globals put back as they were at instantiation.

With ``pool.reuse: false`` every request gets an instance as new.  Creating one
per request (a store, its memory mappings, instantiation, then deleting it all)
costs several times the request itself.  When
:func:`edge_runner.wasm.growprobe.instrument` found that nothing of a module but
its linear memory and its mutable globals outlives a call, the pool keeps the
instance and :class:`Renewal` puts it back into the state it had right after
instantiation (the executor then runs ``_initialize`` again, as for a new one):

- **memory**: the pages the last request wrote are written back with what they
  held at instantiation (the module's data, or zeros).  Which pages those are,
  the kernel says: ``/proc/self/pagemap`` marks each page that is mapped to
  anonymous memory (written, or read, since it was mapped); a page never touched
  still reads as wasmtime mapped it.  When more than
  :data:`MAX_WRITTEN_PAGES` were written, ``madvise(MADV_DONTNEED)`` drops the
  whole memory instead (each page then reads as wasmtime mapped it: zeros, or
  the module's data from its copy-on-write image) and every page of data is
  written back.  The data pages are found once per module, at its first
  instance (:class:`Restore`);
- **globals**: every mutable global (the rewrite exports them, with the guest's
  view of the memory size) gets the value it had at instantiation back;
- **WASI**: a module importing a WASI function that changes the WASI context
  (closing or opening a descriptor...) gets a new context (:data:`STATELESS_WASI`
  lists the others).

Linux only (``/proc/self/pagemap``; ``MADV_DONTNEED`` zero-fills private memory
there); elsewhere :data:`SUPPORTED` is False and instances are made anew.
Figures in docs/performance.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import sys
import typing

from edge_runner.wasm import capi
from edge_runner.wasm.fastcall import StoreHandle

#: WASI functions that leave the WASI context as they found it (``fd_write`` and
#: ``poll_oneoff`` are the runner's own, see :mod:`edge_runner.wasm.engine`).
STATELESS_WASI = frozenset({
    "args_get", "args_sizes_get", "environ_get", "environ_sizes_get", "clock_res_get",
    "clock_time_get", "random_get", "proc_exit", "sched_yield", "poll_oneoff", "fd_write",
    "fd_fdstat_get", "fd_prestat_get", "fd_prestat_dir_name",
})

_PAGE = mmap.PAGESIZE
_MADV_DONTNEED = 4
#: Pages written back one by one at most; more, and the whole memory is dropped.
MAX_WRITTEN_PAGES = 64
_madvise: typing.Any = None
_pagemap = -1  # /proc/self/pagemap, open for the process's life
if sys.platform == "linux":
    _madvise = ctypes.CDLL(None, use_errno=True).madvise
    _madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    _madvise.restype = ctypes.c_int
    with contextlib.suppress(OSError):
        _pagemap = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
_global_get = capi.fast_global_get
_global_set = capi.fast_global_set
_memmove = ctypes.memmove
_memset = ctypes.memset
#: A pagemap entry's top byte -> 1 if its page may have been written: present and
#: not a page of a file (bits 63 and 61: the module's copy-on-write image is one until
#: written), or swapped out (bit 62).  Pages a read mapped to the shared zero page count
#: too (nothing tells them apart from written ones without privileges).
_WRITTEN = bytes(int(bool((b & 0xA0) == 0x80 or b & 0x40)) for b in range(256))


def _written_pages(base: int, size: int) -> bytes:
    """One byte per page of ``[base, base + size)``: 1 if it may have been written."""
    entries = os.pread(_pagemap, size // _PAGE * 8, base // _PAGE * 8)
    return entries[7::8].translate(_WRITTEN)


def _discard(base: int, size: int) -> None:
    if _madvise(base, size, _MADV_DONTNEED) != 0:
        raise OSError(ctypes.get_errno(), "madvise(MADV_DONTNEED) failed on guest memory")


def _kernel_reports_writes(
    written_pages: typing.Callable[[int, int], bytes] = _written_pages,
) -> bool:
    """Does this kernel's pagemap show a written page, and none after MADV_DONTNEED?
    (A sandboxed /proc may answer zeros: renewing on it would keep what requests
    wrote, so renewal is off there.)"""
    if _pagemap < 0:
        return False
    area = mmap.mmap(-1, 2 * _PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        probe = ctypes.c_char.from_buffer(area)
        base = ctypes.addressof(probe)
        area[_PAGE] = 1
        written = written_pages(base, 2 * _PAGE)
        _discard(base, 2 * _PAGE)
        ok = written == b"\x00\x01" and written_pages(base, 2 * _PAGE) == bytes(2) \
            and area[_PAGE] == 0
        del probe
        return ok
    except OSError:
        return False
    finally:
        area.close()


SUPPORTED = _kernel_reports_writes()


def data_pages(memory: bytes) -> dict[int, bytes]:
    """The pages of ``memory`` that are not all zeros, by index."""
    zero = bytes(_PAGE)
    return {offset // _PAGE: memory[offset:offset + _PAGE]
            for offset in range(0, len(memory), _PAGE)
            if memory[offset:offset + _PAGE] != zero}


class Restore:
    """A module's memory at instantiation, as its data pages (the rest is zeros): the
    same for all its instances, so read once, from the first one."""

    __slots__ = ("pages",)

    def __init__(self) -> None:
        #: Page index -> its bytes at instantiation; None: not read yet.
        self.pages: dict[int, bytes] | None = None


class Renewal:
    """The state at instantiation of one instance, and how to return to it.

    Create it right after instantiation, before any guest code ran (``_initialize``
    included); ``globals_`` are the :data:`~edge_runner.wasm.capi.Extern` exports
    the rewrite named; ``restore`` is the module's; ``wasi`` renews the WASI context
    (None: not needed); past ``max_pages`` written, the whole memory is dropped.
    """

    __slots__ = ("_context", "_globals", "_max_pages", "_pages", "_wasi")

    def __init__(self, context: object, handle: StoreHandle, globals_: list[typing.Any],
                 restore: Restore, wasi: capi.WasiRecipe | None, *,
                 max_pages: int = MAX_WRITTEN_PAGES) -> None:
        self._context = context
        self._wasi = wasi
        self._max_pages = max_pages
        self._globals: list[tuple[typing.Any, typing.Any, typing.Any]] = []
        for item in globals_:
            value = capi.Val()
            ref = ctypes.byref(item.of.global_)
            _global_get(context, ref, ctypes.byref(value))
            self._globals.append((item, ref, ctypes.byref(value)))  # item: keeps ref valid
        if restore.pages is None:
            base, size = handle.memory()
            restore.pages = data_pages(ctypes.string_at(base, size))
        self._pages = restore.pages

    def renew(self, base: int, size: int) -> None:
        """Memory (at ``base``, ``size`` bytes now), globals and WASI context as at
        instantiation; raises on failure (then discard the instance)."""
        pages = self._pages
        written = _written_pages(base, size)
        if written.count(1) > self._max_pages:
            _discard(base, size)
            for index, data in pages.items():
                _memmove(base + index * _PAGE, data, _PAGE)
        else:
            index = written.find(1)
            while index >= 0:
                page = pages.get(index)
                if page is None:
                    _memset(base + index * _PAGE, 0, _PAGE)
                else:
                    _memmove(base + index * _PAGE, page, _PAGE)
                index = written.find(1, index + 1)
        context = self._context
        for _, ref, value in self._globals:
            error = _global_set(context, ref, value)
            if error:
                capi.raise_error_at(error)
        if self._wasi is not None:
            self._wasi.apply(context)
