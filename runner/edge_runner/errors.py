"""Why an invocation failed, and which HTTP status that is (docs/http.md).

Raised by the ABI executors (:mod:`edge_runner.abi.edge`, :mod:`edge_runner.abi.wagi`)
and the pool (:mod:`edge_runner.invoke.pool`); turned into problem+json responses by
:mod:`edge_runner.http.problems`.  ``reason`` is the bounded metric label.

    InvocationError
    ├── GuestFailure (502): trap, memory, stack_overflow, bad_response,
    │                       response_too_large, exit, instantiate
    ├── GuestTimeout (504): timeout, fuel
    └── Unavailable (503 + Retry-After): concurrency, memory_budget

``guest_started`` says whether guest code may have run: the data plane retries
an idempotent request once only when it is False (docs/http.md).
"""

from __future__ import annotations


class InvocationError(Exception):
    status = 500
    title = "Invocation failed"

    def __init__(self, reason: str, detail: str, *, guest_started: bool = True) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        #: False when the guest never ran (safe to retry an idempotent request).
        self.guest_started = guest_started


class GuestFailure(InvocationError):
    status = 502
    title = "Function failed"


class GuestTimeout(InvocationError):
    status = 504
    title = "Function timed out"


class Unavailable(InvocationError):
    status = 503
    title = "Function unavailable"

    def __init__(self, reason: str, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(reason, detail, guest_started=False)
        self.retry_after = retry_after
