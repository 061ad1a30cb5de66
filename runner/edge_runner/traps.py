"""Classify what went wrong inside a guest into an :class:`InvocationError`.

Shared by both ABI executors.  The reason is decided from wasmtime's trap code
and the instance's state (its memory at the cap), never from the trap's text.
"""

from __future__ import annotations

import logging

import wasmtime

from edge_runner.errors import GuestFailure, GuestTimeout, InvocationError

log = logging.getLogger("edge_runner.guest")

#: How much of a guest backtrace goes to the log.
BACKTRACE_LIMIT = 2048
WASM_PAGE = 65536


def classify(
    exc: Exception, *, function: str, request_id: str, memory_bytes: int, memory_limit: int
) -> InvocationError:
    """Map a trap or wasmtime error raised by a guest call to an invocation error."""
    if isinstance(exc, wasmtime.ExitTrap):
        return GuestFailure("exit", f"guest exited with code {exc.code}")
    if isinstance(exc, wasmtime.Trap):
        code = exc.trap_code
        if code == wasmtime.TrapCode.INTERRUPT:
            return GuestTimeout("timeout", "the function ran past its time limit")
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            return GuestTimeout("fuel", "the function used up its fuel budget")
        _log_backtrace(exc, function=function, request_id=request_id)
        if code == wasmtime.TrapCode.STACK_OVERFLOW:
            return GuestFailure("stack_overflow", "the function overflowed its stack")
        if memory_bytes + WASM_PAGE > memory_limit:
            return GuestFailure(
                "memory", f"the function trapped at its memory limit of {memory_limit} bytes"
            )
        name = code.name.lower() if code is not None else "trap"
        return GuestFailure("trap", f"the function trapped ({name})")
    log.warning("guest error: %s", str(exc)[:BACKTRACE_LIMIT], extra={"function": function})
    return GuestFailure("trap", "the function failed")


def _log_backtrace(trap: wasmtime.Trap, *, function: str, request_id: str) -> None:
    log.warning(
        "guest trap",
        extra={
            "function": function,
            "request_id": request_id,
            "backtrace": trap.message[:BACKTRACE_LIMIT],
        },
    )
