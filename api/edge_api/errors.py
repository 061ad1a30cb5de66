"""The error shape shared by the fetch, registry and source code of both planes.

:class:`edge_api.fetch.FetchError`, :class:`edge_api.oci.OciError` and the
operator's ``SourceError`` each carry a short ``reason`` (what a condition or a
log line reports), a ``message`` for people, and whether the failure is
``transient`` (the network or the cluster, worth retrying later) or final (the
content).  They stay distinct classes, so each layer still catches only its own;
:class:`ReasonedError` is the one place their fields are defined.
"""

from __future__ import annotations


class ReasonedError(Exception):
    """A failure with a condition ``reason``, a ``message`` and a ``transient`` flag."""

    def __init__(self, reason: str, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.transient = transient
