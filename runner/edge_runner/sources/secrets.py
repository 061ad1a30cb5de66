"""Secrets for route auth and function env, shared by both configuration sources.

Sources (:mod:`edge_runner.sources.manifests` reads Secret manifests from the
folder, :mod:`edge_runner.sources.cluster` gets Secrets by name from the API
server) find the Secrets that routes' ``auth`` and functions'
``env[].valueFrom.secretKeyRef`` name, and :func:`attach` puts them into the
:class:`DesiredState`: route Secrets for the data plane's auth
(:mod:`edge_runner.http.auth`), env values resolved into the function's spec
(so a changed value reloads the function, no restart).  A missing Secret or
key fails only what needs it: the function is reported ``SecretNotFound`` and
not served, a route's auth refuses every request (fail closed).  Values are
never logged; messages name the Secret and key only.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from edge_api.models import EdgeFunctionSpec, EnvVar
from edge_runner.invoke.catalog import DesiredState

#: name -> data key -> value; a name mapped to None: the Secret does not exist.
Found = Mapping[str, Mapping[str, bytes] | None]


class SecretNotFound(LookupError):
    pass


def decode_secret(document: Mapping[str, Any]) -> dict[str, bytes]:
    """The data of a Secret object (``data`` base64, ``stringData`` as text)."""
    values: dict[str, bytes] = {}
    for key, encoded in (document.get("data") or {}).items():
        try:
            values[str(key)] = base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError):
            continue
    for key, text in (document.get("stringData") or {}).items():
        values[str(key)] = str(text).encode()
    return values


def needed(state: DesiredState) -> set[str]:
    """Names of the Secrets the routes and functions of ``state`` read."""
    names = {n for _, spec in state.routes for n in spec.secret_names()}
    return names | {n for f in state.functions if f.spec is not None
                    for n in f.spec.secret_names()}


def resolve_env(spec: EdgeFunctionSpec, found: Found) -> EdgeFunctionSpec:
    """``spec`` with every ``valueFrom`` replaced by its value; raises SecretNotFound."""
    if not spec.secret_names():
        return spec
    env = []
    for item in spec.env:
        if item.value_from is None:
            env.append(item)
            continue
        ref = item.value_from.secret_key_ref
        data = found.get(ref.name)
        if data is None:
            raise SecretNotFound(f"SecretNotFound: env {item.name}: Secret {ref.name} not found")
        if ref.key not in data:
            raise SecretNotFound(f"SecretNotFound: env {item.name}: Secret {ref.name} has no"
                                 f" key {ref.key}")
        env.append(EnvVar(name=item.name, value=data[ref.key].decode("utf-8", "replace")))
    return spec.model_copy(update={"env": env})


def attach(state: DesiredState, found: Found) -> None:
    """Put route Secrets and resolved env into ``state``; report what is missing."""
    for route, spec in state.routes:
        for name in spec.secret_names():
            data = found.get(name)
            if data is None:
                state.errors.append(f"EdgeRoute {route}: Secret {name} not found; its protected"
                                    " rules refuse every request")
            else:
                state.secrets[name] = dict(data)
    for index, source in enumerate(state.functions):
        if source.spec is None or source.error is not None:
            continue
        try:
            resolved = resolve_env(source.spec, found)
        except SecretNotFound as exc:
            state.functions[index] = replace(source, error=f"{source.origin}: {exc}")
            continue
        if resolved is not source.spec:
            state.functions[index] = replace(source, spec=resolved)
