"""Read one identity's requests in one namespace from the test API server's audit log.

The harness's kube-apiserver (tests/support/k8s.py) writes every request to
``Cluster.audit_log`` before answering it; :class:`Audit` reads what was
logged from the point it was made on, so a test counts requests (lists,
writes by field manager) instead of timing them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from support.k8s import Cluster


def read_events(path: Path, offset: int) -> Iterator[dict[str, Any]]:
    """The audit events logged in ``path`` from byte ``offset`` on (a line still being
    written is skipped)."""
    with path.open("rb") as lines:
        lines.seek(offset)
        for line in lines:
            try:
                yield json.loads(line)
            except ValueError:
                continue


class Audit:
    """The requests of ``user`` in ``namespace``, from the point it was made on."""

    def __init__(self, cluster: Cluster, user: str, namespace: str) -> None:
        assert cluster.audit_log is not None, "needs the harness's API server (audit log)"
        self.path: Path = cluster.audit_log
        self.user, self.namespace = user, namespace
        self.offset = self.path.stat().st_size

    def events(self) -> list[dict[str, Any]]:
        """The audit events of each request since then."""
        return [event for event in read_events(self.path, self.offset)
                if event.get("user", {}).get("username") == self.user
                and (event.get("objectRef") or {}).get("namespace") == self.namespace]

    def requests(self) -> list[tuple[str, str, str]]:
        """(verb, resource, name) of each request since then."""
        return [(event.get("verb", ""), (event.get("objectRef") or {}).get("resource", ""),
                 (event.get("objectRef") or {}).get("name", "")) for event in self.events()]

    def status_writes(self, resource: str) -> Counter[str]:
        """Writes of ``resource``'s status subresource since then, by field manager."""
        managers: Counter[str] = Counter()
        for event in self.events():
            ref = event.get("objectRef") or {}
            if ref.get("resource") == resource and ref.get("subresource") == "status" \
                    and event.get("verb") == "patch":
                query = parse_qs(urlsplit(event.get("requestURI", "")).query)
                managers[(query.get("fieldManager") or [""])[0]] += 1
        return managers

    def resyncs(self) -> int:
        """Lists of EdgeRoutes: one per resync (nothing else lists them while no route
        changes)."""
        return Counter((v, r) for v, r, _ in self.requests())[("list", "edgeroutes")]
