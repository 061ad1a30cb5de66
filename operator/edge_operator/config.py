"""Every setting of ``edge-operator``, declared once (docs/cli.md).

:class:`OperatorConfig` is the operator process's one settings model: each field
is a flag (``--url-timeout``) and an ``EDGE_OPERATOR_*`` variable
(``EDGE_OPERATOR_URL_TIMEOUT``); how they combine with the downward API's
``POD_NAMESPACE`` is in :mod:`edge_api.settings`.  The CLI parses it; the
handlers read it from their context.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from edge_api.fetch import parse_networks
from edge_api.settings import BASE_CONFIG, ProcessSettings

#: Default seconds between resyncs (the loop of :mod:`edge_operator.reconcile`):
#: re-resolves ``oci`` tags and JWKS documents, retries failures and catches any
#: missed event; objects whose inputs did not change are skipped
#: (:mod:`edge_operator.rest`).  Referenced ConfigMaps and the published ones are
#: watched, so their changes need no resync.
RESYNC_SECONDS: Final = 60.0


class OperatorConfig(ProcessSettings):
    """Reconcile EdgeFunction and EdgeRoute objects into runner ConfigMaps.

    Every option is also an environment variable EDGE_OPERATOR_<NAME>; flags win.
    """

    model_config = SettingsConfigDict(
        **BASE_CONFIG, env_prefix="EDGE_OPERATOR_", cli_prog_name="edge-operator"
    )
    downward: ClassVar[Mapping[str, str]] = {"POD_NAMESPACE": "namespace"}

    namespace: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="namespace to reconcile; repeat the flag (or give a"
        " comma-separated list) for several (default: $POD_NAMESPACE, else the kubeconfig's)")
    metrics_port: int = Field(8000, ge=0, le=65535, description="port of the Prometheus"
                              " /metrics endpoint on all addresses (0 = off)")
    health_port: int = Field(8081, ge=0, le=65535, description="port of kopf's liveness"
                             " endpoint /healthz (0 = off)")
    max_module_bytes: int = Field(64 * 2**20, gt=0, description="largest module of a"
                                  " url, configMapRef or oci source, bytes; modules over 1 MB"
                                  " reach the runners by reference (docs/artifacts.md)")
    url_timeout: float = Field(30.0, gt=0, description="seconds a download (url source,"
                               " registry) may wait for the network per read before it"
                               " counts as failed")
    fetch_deadline: float = Field(300.0, gt=0, description="seconds one download (url"
                                  " source, registry request) may take in all, redirects"
                                  " included")
    allow_fetch_from: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="networks (CIDR, comma-separated) downloads may"
        " reach although not public: loopback, private, link-local and cluster addresses are"
        " refused otherwise")
    insecure_registries: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="registries (host[:port], comma-separated) spoken"
        " to over plain HTTP; every other registry over verified TLS")
    rollout_interval: float = Field(2.0, gt=0, description="seconds between rollout recounts"
                                    " when no runner Lease changes (Lease and EdgeFunction"
                                    " events trigger a recount at once, at most twice a"
                                    " second; this only catches expiries)")
    resync_interval: float = Field(RESYNC_SECONDS, gt=0, description="seconds between"
                                   " resyncs: oci tags and jwksUri documents are resolved"
                                   " again, failures retried; unchanged objects are skipped")
    public_url: str | None = Field(
        None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$", description="base URL clients reach the"
        " runners at (e.g. https://hello.example.com); EdgeRoutes then show status.url (kubectl"
        " get er -o wide). The chart sets it from its Ingress or HTTPRoute")
    check_secrets: bool = Field(False, description="get the Secrets that EdgeFunction env"
                                " valueFrom names, to report Ready=False SecretNotFound (needs"
                                " get on Secrets: the chart's operator.allowSecretRead sets it)")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="log level")
    log_format: Literal["json", "text"] = Field("json", description="log line format")

    @field_validator("namespace", "allow_fetch_from", "insecure_registries", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return [part.strip() for part in value.split(",") if part.strip()] \
            if isinstance(value, str) else value

    @field_validator("allow_fetch_from")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return [str(network) for network in parse_networks(value)]
