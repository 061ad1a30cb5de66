"""Cluster mode: serve only ConfigMaps the operator published (the trusted hand-off).

:mod:`edge_runner.sources.cluster` lists and watches the namespace's
EdgeFunctions and EdgeRoutes next to the ConfigMaps and feeds their
``status.handoff`` here; :meth:`Handoff.check` passes a parsed ConfigMap only
if :func:`edge_api.handoff.handoff_digest` of it equals the owner's status.
Otherwise the last ConfigMap of that name that did match keeps being served
(an update whose status has not arrived yet, or a forgery over a good one) and
the mismatch is reported: a log line, the ``edge_forged_configmaps`` gauge and
an entry in ``/v1/functions`` ``errors`` (docs/resources.md, "Trusted hand-off").
"""

from __future__ import annotations

import logging
from typing import Any

from edge_api.constants import LABEL_KIND, LABEL_KIND_FUNCTION, LABEL_KIND_ROUTE
from edge_api.handoff import STATUS_FIELD, handoff_digest
from edge_api.wire import (
    FunctionConfig,
    RouteConfig,
    function_configmap_name,
    route_configmap_name,
)

log = logging.getLogger("edge_runner.sources.handoff")

Parsed = FunctionConfig | RouteConfig
#: Custom resource kind -> the ConfigMap kind label of what the operator publishes for it.
KIND_LABELS = {"EdgeFunction": LABEL_KIND_FUNCTION, "EdgeRoute": LABEL_KIND_ROUTE}


def _configmap_name(label: str, name: str) -> str:
    return function_configmap_name(name) if label == LABEL_KIND_FUNCTION \
        else route_configmap_name(name)


class Handoff:
    def __init__(self) -> None:
        #: (kind label, object name) -> status.handoff of that EdgeFunction/EdgeRoute.
        self.owners: dict[tuple[str, str], str] = {}
        self._digests: dict[str, tuple[str, str]] = {}
        self._trusted: dict[str, Parsed] = {}
        self._reported: set[tuple[str, str]] = set()
        #: ConfigMaps that failed the check in the last :meth:`begin` .. now.
        self.rejected = 0

    def replace_owners(self, kind: str, items: list[dict[str, Any]]) -> None:
        label = KIND_LABELS[kind]
        self.owners = {key: value for key, value in self.owners.items() if key[0] != label}
        for item in items:
            self.owner_event(kind, "ADDED", item)

    def owner_event(self, kind: str, event: str, obj: dict[str, Any]) -> bool:
        """Note the owner's ``status.handoff``; True if it changed (anything else an
        owner's event says, its other status fields, annotations, changes nothing here)."""
        key = (KIND_LABELS[kind], obj["metadata"]["name"])
        digest = (obj.get("status") or {}).get(STATUS_FIELD)
        before = self.owners.get(key)
        if event == "DELETED" or not isinstance(digest, str):
            self.owners.pop(key, None)
            return before is not None
        self.owners[key] = digest
        return before != digest

    def begin(self) -> None:
        self.rejected = 0

    def _digest(self, name: str, obj: dict[str, Any]) -> str:
        version = obj["metadata"].get("resourceVersion", "")
        cached = self._digests.get(name)
        if cached is None or cached[0] != version:
            cached = (version, handoff_digest(obj))
            self._digests[name] = cached
        return cached[1]

    def confirms(self, name: str, obj: dict[str, Any], parsed: Parsed) -> bool:
        """True if ConfigMap ``name`` is what its owner's ``status.handoff`` says."""
        label = (obj["metadata"].get("labels") or {}).get(LABEL_KIND, "")
        # The name too: a genuine ConfigMap's content copied under another name is a replay.
        return self.owners.get((label, parsed.name)) == self._digest(name, obj) \
            and name == _configmap_name(label, parsed.name)

    def check(self, name: str, obj: dict[str, Any], parsed: Parsed) -> tuple[Parsed | None,
                                                                             str | None]:
        """What to serve for ConfigMap ``name`` (None: nothing) and an error to report."""
        if self.confirms(name, obj, parsed):
            self._trusted[name] = parsed
            return parsed, None
        label = (obj["metadata"].get("labels") or {}).get(LABEL_KIND, "")
        digest = self._digest(name, obj)
        self.rejected += 1
        owner = "EdgeFunction" if label == LABEL_KIND_FUNCTION else "EdgeRoute"
        error = (f"configmap/{name}: its content does not match status.handoff of {owner}"
                 f" {parsed.name} (written by someone other than the operator, or not yet"
                 " confirmed by it); not served")
        if (name, digest) not in self._reported:
            self._reported.add((name, digest))
            log.warning("%s", error, extra={"object": name})
        return self._trusted.get(name), error

    def forget(self, names: set[str]) -> None:
        """Drop what is kept for ConfigMaps that no longer exist."""
        for name in set(self._trusted) - names:
            del self._trusted[name]
        for name in set(self._digests) - names:
            del self._digests[name]
