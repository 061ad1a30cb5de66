"""The operator -> runner wire format: one ConfigMap per function and per route.

The operator builds these with :func:`function_configmap` / :func:`route_configmap`;
runners watch ConfigMaps labelled ``edgerunner.dev/kind`` in their namespace and
read them back with :func:`parse_configmap`.  Function ConfigMaps carry the
module in ``binaryData[module.wasm]``, the normalized spec as JSON and the
module's digest; route ConfigMaps carry the normalized route spec and, written
by operators that check it, which of the route's functions do not exist
(``missing.json``): runners answer requests for those with a final error
instead of "not loaded yet, retry".  Pure code.

A ConfigMap holds at most 1 MiB, so :data:`MAX_MODULE_BYTES` bounds the module
size this transport carries; larger modules (and every ``oci`` one) travel as an
:class:`edge_api.artifacts.ArtifactRef` in ``artifact.json`` instead of the bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from edge_api.artifacts import MAX_INLINE_BYTES, ArtifactRef
from edge_api.constants import (
    ANNOTATION_DIGEST,
    LABEL_KIND,
    LABEL_KIND_FUNCTION,
    LABEL_KIND_ROUTE,
    LABEL_MANAGED_BY,
    LABEL_OWNER_NAME,
    MANAGED_BY,
)
from edge_api.models import EdgeFunctionSpec, EdgeRouteSpec, describe_validation_error

#: ConfigMaps are limited to 1 MiB of data; leave room for the spec and metadata.
MAX_MODULE_BYTES = MAX_INLINE_BYTES
KEY_MODULE = "module.wasm"
KEY_SPEC = "spec.json"
KEY_ROUTE = "route.json"
KEY_MISSING = "missing.json"
#: JWKS documents the operator fetched for the route's ``jwt.jwksUri``: {uri: document}.
KEY_JWKS = "jwks.json"
#: The route's creationTimestamp: of two conflicting rules the older route's is served.
KEY_CREATED = "created"
KEY_NAME = "name"
KEY_DIGEST = "digest"
KEY_ARTIFACT = "artifact.json"


class WireError(ValueError):
    """A ConfigMap that is not a valid function or route description."""


def _object_name(prefix: str, name: str) -> str:
    full = f"{prefix}-{name}"
    if len(full) <= 253:
        return full
    return f"{prefix}-{name[:200]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def _label_value(name: str) -> str:
    return name if len(name) <= 63 else hashlib.sha256(name.encode()).hexdigest()[:63]


def function_configmap_name(function: str) -> str:
    return _object_name("edgefn", function)


def route_configmap_name(route: str) -> str:
    return _object_name("edgeroute", route)


def _metadata(name: str, namespace: str, kind: str, owner_name: str,
              owner: dict[str, Any] | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {
            LABEL_KIND: kind,
            LABEL_OWNER_NAME: _label_value(owner_name),
            LABEL_MANAGED_BY: MANAGED_BY,
        },
    }
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return metadata


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    """An ownerReference to a custom object, so deleting it deletes its ConfigMap."""
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": False,
    }


def spec_json(spec: EdgeFunctionSpec | EdgeRouteSpec) -> str:
    """Canonical JSON of a normalized spec (stable key order, so equal specs compare equal)."""
    return json.dumps(spec.model_dump(by_alias=True, exclude_none=True), sort_keys=True,
                      separators=(",", ":"))


def function_configmap(
    *, name: str, namespace: str, spec: EdgeFunctionSpec, module: bytes = b"",
    owner: dict[str, Any] | None = None, artifact: ArtifactRef | None = None,
) -> dict[str, Any]:
    """The function's ConfigMap: the module inside, or ``artifact`` (a reference) instead."""
    if artifact is not None:
        return _artifact_configmap(name, namespace, spec, owner, artifact)
    if len(module) > MAX_MODULE_BYTES:
        raise WireError(
            f"module of {len(module)} bytes is over the {MAX_MODULE_BYTES}-byte ConfigMap limit"
        )
    digest = hashlib.sha256(module).hexdigest()
    metadata = _metadata(function_configmap_name(name), namespace, LABEL_KIND_FUNCTION, name,
                         owner)
    metadata["annotations"] = {ANNOTATION_DIGEST: f"sha256:{digest}"}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {KEY_NAME: name, KEY_SPEC: spec_json(spec), KEY_DIGEST: f"sha256:{digest}"},
        "binaryData": {KEY_MODULE: base64.b64encode(module).decode()},
    }


def _artifact_configmap(name: str, namespace: str, spec: EdgeFunctionSpec,
                        owner: dict[str, Any] | None, artifact: ArtifactRef) -> dict[str, Any]:
    metadata = _metadata(function_configmap_name(name), namespace, LABEL_KIND_FUNCTION, name,
                         owner)
    metadata["annotations"] = {ANNOTATION_DIGEST: artifact.digest}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {KEY_NAME: name, KEY_SPEC: spec_json(spec), KEY_DIGEST: artifact.digest,
                 KEY_ARTIFACT: artifact.to_json()},
    }


def route_configmap(
    *, name: str, namespace: str, spec: EdgeRouteSpec, owner: dict[str, Any] | None = None,
    missing: Sequence[str] = (), jwks: Mapping[str, str] | None = None, created: str = "",
) -> dict[str, Any]:
    """The route's ConfigMap; ``missing``: its functions that do not exist in the namespace;
    ``jwks``: the JWKS documents fetched for its ``jwksUri`` (public keys only);
    ``created``: the route's creationTimestamp."""
    data = {KEY_NAME: name, KEY_ROUTE: spec_json(spec),
            KEY_MISSING: json.dumps(sorted(set(missing)), separators=(",", ":"))}
    if jwks:
        data[KEY_JWKS] = json.dumps(dict(jwks), sort_keys=True, separators=(",", ":"))
    if created:
        data[KEY_CREATED] = created
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(route_configmap_name(name), namespace, LABEL_KIND_ROUTE, name,
                              owner),
        "data": data,
    }


@dataclass(frozen=True)
class FunctionConfig:
    name: str
    spec: EdgeFunctionSpec
    #: The module; empty when it travels by reference (``artifact``).
    module: bytes
    digest: str
    artifact: ArtifactRef | None = None


@dataclass(frozen=True)
class RouteConfig:
    name: str
    spec: EdgeRouteSpec
    #: Functions of the route the operator found missing; None: not said (older operator).
    missing: frozenset[str] | None = None
    #: JWKS documents by ``jwksUri``, as the operator fetched them.
    jwks: Mapping[str, bytes] = field(default_factory=dict)
    #: The route's creationTimestamp ("" from an older operator: counts as oldest).
    created: str = ""


def _missing(data: dict[str, Any], configmap: str) -> frozenset[str] | None:
    text = data.get(KEY_MISSING)
    if text is None:
        return None
    try:
        names = json.loads(text)
    except ValueError as exc:
        raise WireError(f"configmap {configmap}: {KEY_MISSING} is not JSON: {exc}") from exc
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise WireError(f"configmap {configmap}: {KEY_MISSING} is not a list of names")
    return frozenset(names)


def _jwks(data: dict[str, Any], configmap: str) -> dict[str, bytes]:
    text = data.get(KEY_JWKS)
    if text is None:
        return {}
    try:
        documents = json.loads(text)
    except ValueError as exc:
        raise WireError(f"configmap {configmap}: {KEY_JWKS} is not JSON: {exc}") from exc
    if not isinstance(documents, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in documents.items()):
        raise WireError(f"configmap {configmap}: {KEY_JWKS} is not a map of documents")
    return {uri: document.encode() for uri, document in documents.items()}


def parse_configmap(configmap: dict[str, Any]) -> FunctionConfig | RouteConfig:
    """Read a ConfigMap written by the operator; raises :class:`WireError`."""
    metadata = configmap.get("metadata") or {}
    kind = (metadata.get("labels") or {}).get(LABEL_KIND)
    data = configmap.get("data") or {}
    name = data.get(KEY_NAME)
    if not isinstance(name, str) or not name:
        raise WireError(f"configmap {metadata.get('name')}: no `{KEY_NAME}` key")
    try:
        if kind == LABEL_KIND_ROUTE:
            return RouteConfig(name, EdgeRouteSpec.model_validate_json(data.get(KEY_ROUTE, "")),
                               _missing(data, str(metadata.get("name"))),
                               _jwks(data, str(metadata.get("name"))),
                               str(data.get(KEY_CREATED, "")))
        if kind != LABEL_KIND_FUNCTION:
            raise WireError(f"configmap {metadata.get('name')}: unknown kind {kind!r}")
        spec = EdgeFunctionSpec.model_validate_json(data.get(KEY_SPEC, ""))
    except ValidationError as exc:
        raise WireError(f"configmap {metadata.get('name')}: {describe_validation_error(exc)}"
                        ) from exc
    if KEY_ARTIFACT in data:
        try:
            artifact = ArtifactRef.from_json(str(data[KEY_ARTIFACT]))
        except ValueError as exc:
            raise WireError(f"configmap {metadata.get('name')}: {exc}") from exc
        if data.get(KEY_DIGEST) != artifact.digest:
            raise WireError(f"configmap {metadata.get('name')}: artifact digest does not match")
        return FunctionConfig(name, spec, b"", artifact.digest, artifact)
    encoded = (configmap.get("binaryData") or {}).get(KEY_MODULE)
    if not isinstance(encoded, str):
        raise WireError(f"configmap {metadata.get('name')}: no binaryData `{KEY_MODULE}`")
    module = base64.b64decode(encoded)
    digest = f"sha256:{hashlib.sha256(module).hexdigest()}"
    if data.get(KEY_DIGEST) != digest:
        raise WireError(f"configmap {metadata.get('name')}: module digest does not match")
    return FunctionConfig(name, spec, module, digest)
