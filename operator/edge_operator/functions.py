"""Reconcile one EdgeFunction: resolve, validate, publish, report.

Called by :mod:`edge_operator.handlers` (thin kopf handlers).  Order: parse
the spec, resolve the source (:mod:`edge_operator.sources`), validate the
module for its ABI (:mod:`edge_api.abi`, off the event loop), write the
function ConfigMap (:mod:`edge_operator.publish`), and return the status the
object should have.  Problems become conditions with a reason, never a crash.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import wasmtime
from pydantic import ValidationError

from edge_api.abi import ModuleRejected, validate
from edge_api.kube import KubeClient
from edge_api.models import EdgeFunctionSpec, describe_validation_error
from edge_api.wire import (
    MAX_MODULE_BYTES,
    function_configmap,
    function_configmap_name,
    owner_reference,
)
from edge_operator.conditions import Want
from edge_operator.config import OperatorConfig
from edge_operator.metrics import OperatorMetrics
from edge_operator.publish import apply_configmap
from edge_operator.sources import SourceError, resolve

_ENGINE = wasmtime.Engine()


@dataclass
class FunctionOutcome:
    """What one reconcile decided: status fields, conditions, and a warning if any."""

    fields: dict[str, Any] = field(default_factory=dict)
    conditions: list[Want] = field(default_factory=list)
    warning: tuple[str, str] | None = None
    #: Retry later (transient problem), in seconds; None = done.
    retry_after: float | None = None
    result: str = "ok"


def _failed(reason: str, message: str, *, module_valid: bool | None, result: str,
            retry_after: float | None = None) -> FunctionOutcome:
    conditions = [Want("Ready", False, reason, message)]
    if module_valid is not None:
        conditions.append(Want("ModuleValid", module_valid, reason if not module_valid
                               else "Valid", "" if module_valid else message))
    else:
        conditions.append(Want("ModuleValid", None, reason, message))
    return FunctionOutcome(conditions=conditions, warning=(reason, message),
                           retry_after=retry_after, result=result)


async def reconcile_function(body: dict[str, Any], *, kube: KubeClient, config: OperatorConfig,
                             metrics: OperatorMetrics) -> FunctionOutcome:
    metadata = body["metadata"]
    name, namespace = metadata["name"], metadata["namespace"]
    try:
        spec = EdgeFunctionSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        return _failed("InvalidSpec", describe_validation_error(exc), module_valid=False,
                       result="invalid")
    try:
        wasm = await resolve(spec.source, namespace=namespace, kube=kube, config=config)
    except SourceError as exc:
        return _failed(exc.reason, exc.message, module_valid=None if exc.transient else False,
                       result="error" if exc.transient else "invalid",
                       retry_after=30.0 if exc.transient else None)
    try:
        digest = await asyncio.to_thread(validate, wasm, spec.abi, _ENGINE)
    except ModuleRejected as exc:
        return _failed(exc.reason, str(exc), module_valid=False, result="invalid")
    fields: dict[str, Any] = {
        "digest": digest,
        "shortDigest": digest[7:19],
        "size": len(wasm),
    }
    if len(wasm) > MAX_MODULE_BYTES:
        outcome = _failed(
            "ModuleTooLarge",
            f"module of {len(wasm)} bytes does not fit a ConfigMap ({MAX_MODULE_BYTES} bytes);"
            " artifact references are not supported yet",
            module_valid=True, result="invalid")
        outcome.fields = fields
        return outcome
    configmap = function_configmap(name=name, namespace=namespace, spec=spec, module=wasm,
                                   owner=owner_reference(body))
    await apply_configmap(kube, configmap, metrics)
    fields["artifact"] = f"configmap/{function_configmap_name(name)}"
    return FunctionOutcome(
        fields=fields,
        conditions=[
            Want("ModuleValid", True, "Valid", f"{spec.abi} module, {len(wasm)} bytes"),
            Want("Ready", True, "Published", f"published as {fields['artifact']}"),
        ],
    )
