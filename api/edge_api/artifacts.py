"""Where a published module is, when it does not travel inside the function ConfigMap.

The operator (:mod:`edge_operator.functions`) publishes an :class:`ArtifactRef`
instead of the bytes for every ``oci`` source and for ``url`` / ``configMapRef``
modules too big for a ConfigMap; :mod:`edge_api.wire` carries it as
``artifact.json``; runners (:mod:`edge_runner.sources.artifacts`) fetch the
module from the same source, check its size and sha256, and keep it on disk.
The fetch policy the operator applied travels with the reference
(``allow``, ``insecure``), so runners fetch under the same rules
(docs/artifacts.md).  Pure code.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

#: Largest module carried inside a function ConfigMap (a ConfigMap holds 1 MiB; room
#: is left for the spec and metadata).  Larger ones travel as an :class:`ArtifactRef`.
MAX_INLINE_BYTES: Final = 1_000_000

Kind = Literal["oci", "url", "configMap"]
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


@dataclass(frozen=True)
class ArtifactRef:
    """A module by reference: ``digest`` (sha256 of the module) and ``size`` are exact."""

    kind: Kind
    #: oci: ``registry/repo@sha256:<manifest>``; url: the URL; configMap: the ConfigMap name.
    location: str
    digest: str
    size: int
    #: configMap: the key; unused otherwise.
    key: str = ""
    #: oci: name of the kubernetes.io/dockerconfigjson Secret in the function's namespace.
    pull_secret: str = ""
    #: The operator's EDGE_OPERATOR_ALLOW_FETCH_FROM networks.
    allow: tuple[str, ...] = ()
    #: The operator's EDGE_OPERATOR_INSECURE_REGISTRIES.
    insecure: tuple[str, ...] = field(default=())

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ArtifactRef:
        """Parse ``artifact.json``; raises ValueError for anything malformed."""
        raw: Any = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("artifact.json is not an object")
        try:
            ref = cls(kind=raw["kind"], location=str(raw["location"]), digest=str(raw["digest"]),
                      size=int(raw["size"]), key=str(raw.get("key", "")),
                      pull_secret=str(raw.get("pull_secret", "")),
                      allow=tuple(str(a) for a in raw.get("allow", ())),
                      insecure=tuple(str(a) for a in raw.get("insecure", ())))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"artifact.json: {exc}") from exc
        if ref.kind not in ("oci", "url", "configMap") or not _DIGEST.match(ref.digest) \
                or ref.size < 0:
            raise ValueError("artifact.json: bad kind, digest or size")
        return ref
