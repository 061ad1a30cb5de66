"""JWKS documents for EdgeRoutes whose ``auth.jwt`` names a ``jwksUri``.

Decision (docs/http.md): the operator fetches the JWKS, not the runners. It is
public key material, so it travels in the route's ConfigMap (``jwks.json``,
covered by the hand-off digest), runners need no egress and the one fetch per
URI and resync serves every runner. :func:`jwks_for` is called by
:func:`edge_operator.routes.reconcile_route` on every reconcile, so keys are
refreshed at every resync (``RESYNC_SECONDS`` of :mod:`edge_operator.config`,
60 s); a token signed with a key the provider has just added is refused (401)
until then. When a fetch fails the document published before is kept.

:func:`fetch_document` goes through the operator's one fetch policy
(:func:`edge_api.fetch.fetch_bounded`: every address checked on every redirect
hop against ``--allow-fetch-from``, ``Accept-Encoding: identity``, a byte cap
counted as bytes arrive, an overall deadline), like ``source.url``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import ConfigMap

from edge_api.fetch import FetchError as PolicyError
from edge_api.fetch import Network, fetch_bounded
from edge_api.k8s import status_code
from edge_api.wire import KEY_JWKS

log = logging.getLogger("edge_operator.jwks")

#: Largest JWKS document read (providers publish a few keys: a few KiB).
MAX_JWKS_BYTES: Final = 64 * 1024
#: Seconds one fetch may take in total.
DEADLINE_SECONDS: Final = 10.0


class FetchError(Exception):
    """A JWKS that could not be fetched; the message says why (no body content)."""


async def fetch_document(url: str, *, allow: Sequence[Network] = (),
                         max_bytes: int = MAX_JWKS_BYTES,
                         deadline: float = DEADLINE_SECONDS) -> bytes:
    """GET ``url`` under the fetch policy: status 200, at most ``max_bytes``, within
    ``deadline`` seconds; addresses outside ``allow`` that are not public are refused."""
    try:
        response = await fetch_bounded(url, max_bytes=max_bytes, deadline=deadline,
                                       allow=allow, idle=deadline)
    except PolicyError as exc:
        raise FetchError(f"{exc.reason}: {exc.message}") from exc
    if response.status != 200:
        raise FetchError(f"HTTP {response.status}")
    return response.body


def _check(document: bytes) -> str:
    """The document as text if it is a JWKS of public keys; raises FetchError."""
    try:
        keys = json.loads(document)["keys"]
    except (ValueError, KeyError, TypeError) as exc:
        raise FetchError("not a JWKS document") from exc
    if not isinstance(keys, list) or any(not isinstance(k, dict) or "d" in k for k in keys):
        raise FetchError("not a JWKS of public keys")
    return document.decode()


async def _published(kube: AsyncClient, namespace: str, configmap: str) -> dict[str, str]:
    try:
        found = await kube.get(ConfigMap, configmap, namespace=namespace)
    except ApiError as exc:
        if status_code(exc) == 404:
            return {}
        raise
    try:
        documents = json.loads((found.data or {}).get(KEY_JWKS, "{}"))
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in documents.items()} if isinstance(documents, dict) else {}


async def jwks_for(uris: Sequence[str], *, kube: AsyncClient, namespace: str, configmap: str,
                   allow: Sequence[Network] = ()
                   ) -> tuple[dict[str, str], Mapping[str, str]]:
    """The documents to publish by URI, and the failures (URI -> why)."""
    documents: dict[str, str] = {}
    failures: dict[str, str] = {}
    previous: dict[str, str] | None = None
    for uri in uris:
        try:
            documents[uri] = _check(await fetch_document(uri, allow=allow))
        except FetchError as exc:
            failures[uri] = str(exc)
            if previous is None:
                previous = await _published(kube, namespace, configmap)
            if uri in previous:
                documents[uri] = previous[uri]
    return documents, failures


def describe(failures: Mapping[str, str], kept: Any) -> str:
    """The Ready message of a route whose JWKS fetch failed."""
    parts = [f"jwksUri {uri}: {why}" + ("; serving the JWKS fetched before" if uri in kept
                                        else "; its tokens are refused until it works")
             for uri, why in failures.items()]
    return "; ".join(parts)
