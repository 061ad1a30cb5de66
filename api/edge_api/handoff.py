"""The trusted hand-off from operator to runners: a digest of what the operator published.

The operator writes a ConfigMap per function and route (:mod:`edge_api.wire`)
and then records :func:`handoff_digest` of it in the owning object's status
(``status.handoff``).  A runner serves a labelled ConfigMap only if its digest
equals that status field.  Status is a subresource: the built-in ``edit`` role
(and anyone who may write ConfigMaps or even the EdgeFunction's spec) cannot
write it, so a ConfigMap forged by such a user is never served
(docs/resources.md, "Trusted hand-off").  Pure code, shared by both planes so
they hash the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from edge_api.constants import LABEL_KIND

#: The status field of EdgeFunction and EdgeRoute holding the digest.
STATUS_FIELD: Final = "handoff"


def handoff_digest(configmap: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the ConfigMap's kind label, ``data`` and ``binaryData``.

    Every key counts (also keys someone else added), so any change by anyone
    but the operator makes the digest differ.
    """
    metadata = configmap.get("metadata") or {}
    canonical = json.dumps(
        {"kind": (metadata.get("labels") or {}).get(LABEL_KIND),
         "data": configmap.get("data") or {}, "binaryData": configmap.get("binaryData") or {}},
        sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
