"""Does every Secret an EdgeFunction's env names exist, with the key? (docs/resources.md)

Called by :func:`edge_operator.functions.reconcile_function` after the module
is validated and before it is published, when ``--check-secrets`` is on (the
chart turns it on with ``operator.allowSecretRead``, which grants the ``get``).
Only existence is checked: the values are read by the runners, never copied
by the operator.  Without the check, or without the permission (403: skipped),
the runner alone reports ``SecretNotFound`` (``/v1/functions`` and its log).
"""

from __future__ import annotations

import logging

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Secret

from edge_api.k8s import status_code
from edge_api.models import EdgeFunctionSpec
from edge_operator.sources import SourceError

log = logging.getLogger("edge_operator.secrets")


async def check_env_secrets(spec: EdgeFunctionSpec, *, namespace: str, kube: AsyncClient
                            ) -> None:
    """Raise a transient ``SecretNotFound`` :class:`SourceError` for a missing Secret or key."""
    wanted: dict[str, set[str]] = {}
    for item in spec.env:
        if item.value_from is not None:
            ref = item.value_from.secret_key_ref
            wanted.setdefault(ref.name, set()).add(ref.key)
    for name, keys in wanted.items():
        try:
            secret = await kube.get(Secret, name, namespace=namespace)
        except ApiError as exc:
            if status_code(exc) == 403:
                log.debug("not allowed to get Secret %s; the runners check it", name)
                return
            if status_code(exc) == 404:
                raise SourceError("SecretNotFound", f"Secret {name} (env valueFrom) not found in"
                                  f" {namespace}", transient=True) from exc
            raise
        present = set(secret.data or {}) | set(secret.stringData or {})
        missing = sorted(keys - present)
        if missing:
            raise SourceError("SecretNotFound", f"Secret {name} has no key"
                              f" {', '.join(missing)} (env valueFrom)", transient=True)
