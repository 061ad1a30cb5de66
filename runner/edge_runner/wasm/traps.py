"""Classify what went wrong inside a guest into an :class:`InvocationError`.

Shared by both ABI executors.  The reason is decided from wasmtime's trap code
and from the instance's grow probe (:mod:`edge_runner.wasm.growprobe`: did the store
limit refuse a ``memory.grow``?), never from the trap's text.  Precedence: the
time and fuel limits (what actually stopped the call), then a refused growth
(the root cause of whatever the guest did next, typically an abort), then the
trap code.  The guest backtrace goes to the log, bounded.
"""

from __future__ import annotations

import logging

import wasmtime

from edge_runner.errors import GuestFailure, GuestTimeout, InvocationError
from edge_runner.wasm.deadline import is_time_limit

log = logging.getLogger("edge_runner.guest")

#: How much of a guest backtrace (characters) goes to the log.
BACKTRACE_LIMIT = 2048
#: How much of a wasmtime error message goes into a problem's detail.
DETAIL_LIMIT = 300
WASM_PAGE = 65536


def memory_failure(limit: int) -> GuestFailure:
    return GuestFailure(
        "memory", f"the function hit its memory limit of {limit} bytes (memory.grow refused)"
    )


def classify(
    exc: Exception, *, function: str, request_id: str, memory_refused: bool, memory_limit: int
) -> InvocationError:
    """Map a trap or wasmtime error raised by a guest call to an invocation error."""
    if is_time_limit(exc):
        return GuestTimeout("timeout", "the function ran past its time limit")
    if isinstance(exc, wasmtime.Trap):
        code = exc.trap_code
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            return GuestTimeout("fuel", "the function used up its fuel budget")
    if memory_refused:
        return memory_failure(memory_limit)
    if isinstance(exc, wasmtime.ExitTrap):
        return GuestFailure("exit", f"guest exited with code {exc.code}")
    if isinstance(exc, wasmtime.Trap):
        _log_backtrace(exc, function=function, request_id=request_id)
        code = exc.trap_code
        if code == wasmtime.TrapCode.STACK_OVERFLOW:
            return GuestFailure("stack_overflow", "the function overflowed its stack")
        name = code.name.lower() if code is not None else "trap"
        return GuestFailure("trap", f"the function trapped ({name})")
    log.warning(
        "guest error: %s", str(exc)[:BACKTRACE_LIMIT],
        extra={"function": function, "request_id": request_id},
    )
    return GuestFailure("trap", "the function failed")


def initial_memory(module: wasmtime.Module) -> int:
    """Bytes of linear memory a module asks for at instantiation (its visible memories)."""
    types = [e.type for e in module.exports] + [i.type for i in module.imports]
    return max(
        (t.limits.min * WASM_PAGE for t in types if isinstance(t, wasmtime.MemoryType)),
        default=0,
    )


def instantiation_failure(
    exc: Exception, *, module: wasmtime.Module, function: str, request_id: str,
    memory_refused: bool, memory_limit: int,
) -> InvocationError:
    """Classify a failure to create an instance.

    A trap means guest code ran (a start function or ``_initialize``): its time
    and memory limits keep their reasons, anything else is ``instantiate``.  A
    plain wasmtime error means no guest code ran (``guest_started=False``):
    ``memory`` if the module's initial memory is over its limit (arithmetic on
    the module's declared minimum, not the error text), else ``instantiate``.
    """
    if isinstance(exc, (wasmtime.Trap, wasmtime.ExitTrap)):
        error = classify(
            exc, function=function, request_id=request_id, memory_refused=memory_refused,
            memory_limit=memory_limit,
        )
        if isinstance(error, GuestTimeout) or error.reason == "memory":
            return error
        return GuestFailure("instantiate", f"instantiation failed: {error.detail}")
    needed = initial_memory(module)
    if needed > memory_limit:
        return GuestFailure(
            "memory",
            f"the module needs {needed} bytes of memory at start, over its limit of"
            f" {memory_limit} bytes",
            guest_started=False,
        )
    log.warning("instantiation failed: %s", str(exc)[:BACKTRACE_LIMIT],
                extra={"function": function, "request_id": request_id})
    return GuestFailure(
        "instantiate", f"instantiation failed: {str(exc)[:DETAIL_LIMIT]}", guest_started=False
    )


def _log_backtrace(trap: wasmtime.Trap, *, function: str, request_id: str) -> None:
    log.warning(
        "guest trap",
        extra={
            "function": function,
            "request_id": request_id,
            "backtrace": trap.message[:BACKTRACE_LIMIT],
        },
    )
