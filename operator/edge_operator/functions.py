"""Reconcile one EdgeFunction: resolve, validate, publish, report.

Called by :mod:`edge_operator.handlers` (thin kopf handlers).  Order: parse
the spec, resolve the source (:mod:`edge_operator.sources`), validate the
module for its ABI (:mod:`edge_operator.validation`: cached by digest, compiled
off the event loop), write the function ConfigMap (:mod:`edge_operator.publish`),
and return what the status should say.  Problems become conditions with a
reason, never a crash; transient ones carry a retry delay
(:attr:`FunctionOutcome.retry_after`) the handler hands to kopf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from lightkube import AsyncClient
from pydantic import ValidationError

from edge_api.abi import ModuleRejected
from edge_api.artifacts import MAX_INLINE_BYTES
from edge_api.handoff import STATUS_FIELD, handoff_digest
from edge_api.models import EdgeFunctionSpec, describe_validation_error
from edge_api.wire import (
    function_configmap,
    function_configmap_name,
    owner_reference,
)
from edge_operator.conditions import Want
from edge_operator.config import OperatorConfig
from edge_operator.metrics import OperatorMetrics
from edge_operator.publish import NotOwned, apply_configmap
from edge_operator.secrets import check_env_secrets
from edge_operator.sources import Resolved, SourceError, resolve
from edge_operator.validation import ValidationCache

#: First retry of a transient failure (seconds); doubled per retry up to the cap.
RETRY_FIRST: Final = 5.0
#: The resync timer's interval: no retry waits longer than the next resync.
RETRY_CAP: Final = 60.0


def retry_delay(retry: int) -> float:
    """Seconds before retry number ``retry + 1`` of a transient failure (5, 10, 20, 40, 60...)."""
    return min(RETRY_FIRST * float(2 ** max(retry, 0)), RETRY_CAP)


@dataclass
class FunctionOutcome:
    """What one reconcile decided: status fields, conditions, and a warning if any."""

    fields: dict[str, Any] = field(default_factory=dict)
    conditions: list[Want] = field(default_factory=list)
    warning: tuple[str, str] | None = None
    #: Retry in this many seconds (a transient problem); None = done until the next change
    #: or resync.
    retry_after: float | None = None
    result: str = "ok"


def failed(reason: str, message: str, *, module_valid: bool | None, result: str,
           retry_after: float | None = None) -> FunctionOutcome:
    """The outcome of a reconcile that stopped at ``reason``.

    ``module_valid`` None means the module could not be looked at (Unknown).
    """
    conditions = [Want("Ready", False, reason, message)]
    if module_valid is not None:
        conditions.append(Want("ModuleValid", module_valid, reason if not module_valid
                               else "Valid", "" if module_valid else message))
    else:
        conditions.append(Want("ModuleValid", None, reason, message))
    return FunctionOutcome(conditions=conditions, warning=(reason, message),
                           retry_after=retry_after, result=result)


def published(abi: str, module: Resolved, name: str) -> FunctionOutcome:
    """The outcome of a reconcile that published the module (or its reference)."""
    artifact = module.pinned or f"configmap/{function_configmap_name(name)}"
    how = "by reference" if module.artifact is not None else "inline"
    return FunctionOutcome(
        fields={**module_fields(module.size, module.digest), "artifact": artifact},
        conditions=[
            Want("ModuleValid", True, "Valid", f"{abi} module, {module.size} bytes"),
            Want("Ready", True, "Published", f"published as {artifact} ({how})"),
        ],
    )


def module_fields(size: int, digest: str) -> dict[str, Any]:
    return {"digest": digest, "shortDigest": digest[7:19], "size": size}


def too_large(module: Resolved) -> FunctionOutcome | None:
    """ModuleTooLarge for a valid module that must travel inside the ConfigMap (an
    ``inline`` source) and does not fit, else None."""
    if module.artifact is not None or module.size <= MAX_INLINE_BYTES:
        return None
    outcome = failed(
        "ModuleTooLarge",
        f"module of {module.size} bytes does not fit a ConfigMap ({MAX_INLINE_BYTES} bytes);"
        " an inline module must: use url, configMapRef or oci for larger ones",
        module_valid=True, result="invalid")
    outcome.fields = module_fields(module.size, module.digest)
    return outcome


async def reconcile_function(body: dict[str, Any], *, kube: AsyncClient, config: OperatorConfig,
                             metrics: OperatorMetrics, validations: ValidationCache,
                             retry: int = 0) -> FunctionOutcome:
    """Reconcile ``body``; ``retry`` counts the retries of a transient failure so far."""
    metadata = body["metadata"]
    name, namespace = metadata["name"], metadata["namespace"]
    try:
        spec = EdgeFunctionSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        return failed("InvalidSpec", describe_validation_error(exc), module_valid=False,
                      result="invalid")
    try:
        module = await resolve(spec.source, namespace=namespace, kube=kube, config=config,
                               known=lambda digest: validations.lookup(digest, spec.abi)
                               is not None)
    except SourceError as exc:
        return failed(exc.reason, exc.message, module_valid=None if exc.transient else False,
                      result="error" if exc.transient else "invalid",
                      retry_after=retry_delay(retry) if exc.transient else None)
    try:
        if module.wasm is None:
            validations.known(module.digest, spec.abi)
        else:
            await validations.validate(module.wasm, spec.abi)
    except ModuleRejected as exc:
        return failed(exc.reason, str(exc), module_valid=False, result="invalid")
    except KeyError:  # evicted meanwhile: fetch and validate on the retry
        return failed("ValidationPending", "validating the module again", module_valid=None,
                      result="error", retry_after=RETRY_FIRST)
    oversized = too_large(module)
    if oversized is not None:
        return oversized
    try:
        if config.check_secrets:
            await check_env_secrets(spec, namespace=namespace, kube=kube)
    except SourceError as exc:
        return failed(exc.reason, exc.message, module_valid=True, result="error",
                      retry_after=retry_delay(retry))
    configmap = function_configmap(name=name, namespace=namespace, spec=spec,
                                   module=module.wasm if module.artifact is None and
                                   module.wasm is not None else b"",
                                   artifact=module.artifact, owner=owner_reference(body))
    try:
        await apply_configmap(kube, configmap, metrics)
    except NotOwned as exc:
        return failed("ConfigMapNotOwned", str(exc), module_valid=True, result="error",
                      retry_after=retry_delay(retry))
    outcome = published(spec.abi, module, name)
    outcome.fields[STATUS_FIELD] = handoff_digest(configmap)  # the trusted hand-off
    return outcome
