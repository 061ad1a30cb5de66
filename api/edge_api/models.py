"""Pydantic models of the ``EdgeFunction`` and ``EdgeRoute`` custom resources.

The field names and defaults are the public contract of docs/resources.md and
mirror the OpenAPI schemas in ``crds/``.  The runner parses standalone manifests
with them, the operator parses cluster objects with them, and both exchange the
normalized form (``model_dump(by_alias=True)``) through ConfigMaps.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from edge_api.constants import API_VERSION, KIND_FUNCTION, KIND_ROUTE
from edge_api.units import parse_duration, parse_quantity

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOST = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_TEMPLATE_SEGMENT = re.compile(r"^\{[A-Za-z_][A-Za-z0-9_]*\}$")

Bytes = Annotated[int, BeforeValidator(parse_quantity), Field(ge=0)]
Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class _Model(BaseModel):
    """Base: camelCase on the wire, unknown fields refused, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ConfigMapRef(_Model):
    name: str
    key: str = "module.wasm"


class UrlSource(_Model):
    url: Annotated[str, Field(pattern=r"^https?://")]
    sha256: Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")]


class SecretRef(_Model):
    name: str


class OciSource(_Model):
    ref: str
    pull_secret_ref: SecretRef | None = None


class Source(_Model):
    """Where the module comes from: exactly one field is set."""

    inline: str | None = None
    config_map_ref: ConfigMapRef | None = None
    url: UrlSource | None = None
    oci: OciSource | None = None
    path: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        chosen = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ValueError(
                "exactly one of inline, configMapRef, url, oci, path must be set"
                f" (got {len(chosen)})"
            )
        return self

    @field_validator("inline")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"inline is not valid base64: {exc}") from exc
        return value

    def inline_bytes(self) -> bytes:
        """The decoded inline module (only valid when ``inline`` is set)."""
        assert self.inline is not None
        return base64.b64decode(self.inline)


class Limits(_Model):
    memory: Bytes = 64 * 2**20
    timeout: Annotated[Seconds, Field(gt=0)] = 1.0
    fuel: Annotated[int, Field(ge=0)] = 0
    max_request_bytes: Bytes = 2**20
    max_response_bytes: Bytes = 8 * 2**20


class SecretKeyRef(_Model):
    name: Annotated[str, Field(pattern=_DNS1123.pattern, max_length=253)]
    key: Annotated[str, Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)]


class EnvSource(_Model):
    secret_key_ref: SecretKeyRef


class EnvVar(_Model):
    """A literal ``value``, or ``valueFrom.secretKeyRef`` (docs/resources.md, never both)."""

    name: Annotated[str, Field(pattern=_ENV_NAME.pattern)]
    value: str = ""
    value_from: EnvSource | None = None

    @model_validator(mode="after")
    def _one_value(self) -> EnvVar:
        if self.value_from is not None and self.value:
            raise ValueError("set value or valueFrom, not both")
        return self


class Pool(_Model):
    reuse: bool = True
    max_instances: Annotated[int, Field(ge=1, le=1024)] = 8
    idle_timeout: Seconds = 300.0


#: Equal limits and pools of different specs, one object each (see :func:`_shared`).
_SHARED: dict[tuple[object, ...], Limits | Pool] = {}
#: Distinct values kept at most; past that the table starts afresh (specs keep theirs).
_SHARED_MAX = 4096


def _shared(value: Limits | Pool) -> Limits | Pool:
    """The one object for equal ``limits`` (or ``pool``) values: a runner with 10,000
    functions mostly of the same few shapes keeps a few of each, not 10,000 (about
    500 bytes each).  They are frozen, so sharing is invisible; the fields set
    explicitly are part of the key, so dumps with ``exclude_unset`` do not change."""
    key = (type(value), *value.__dict__.values(), *sorted(value.model_fields_set))
    found = _SHARED.get(key)
    if found is not None:
        return found
    if len(_SHARED) >= _SHARED_MAX:
        _SHARED.clear()
    _SHARED[key] = value
    return value


class EdgeFunctionSpec(_Model):
    source: Source
    abi: Literal["edge", "wagi", "wasi-http"] = "edge"
    limits: Limits = Limits()
    env: list[EnvVar] = []
    pool: Pool = Pool()

    @field_validator("limits", "pool")
    @classmethod
    def _share(cls, value: Limits | Pool) -> Limits | Pool:
        return _shared(value)

    @field_validator("env")
    @classmethod
    def _unique_env(cls, value: list[EnvVar]) -> list[EnvVar]:
        names = [item.name for item in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate env names: {', '.join(duplicates)}")
        return value

    def secret_names(self) -> list[str]:
        """Every Secret its env reads, once each."""
        return list(dict.fromkeys(e.value_from.secret_key_ref.name for e in self.env
                                  if e.value_from is not None))


#: Signature algorithms a route may allow: asymmetric only, so ``none`` and HS*
#: (where a public key could be misused as an HMAC secret) cannot be chosen.
JwtAlgorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                       "ES256", "ES384", "ES512", "EdDSA"]
_AUTH_HEADER = r"^x-edge-auth-[a-z0-9][-a-z0-9]*$"


class ApiKeyAuth(_Model):
    """Keys in a header (default ``x-api-key``) or a query parameter; every value of the
    Secret's data is a valid key."""

    header: Annotated[str, Field(pattern=r"^[A-Za-z0-9][-A-Za-z0-9_]*$")] | None = None
    query: Annotated[str, Field(pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$")] | None = None
    secret_ref: SecretRef

    @model_validator(mode="after")
    def _one_place(self) -> ApiKeyAuth:
        if self.header is not None and self.query is not None:
            raise ValueError("set header or query, not both")
        return self


class ClaimHeader(_Model):
    claim: Annotated[str, Field(min_length=1)]
    header: Annotated[str, Field(pattern=_AUTH_HEADER)]


class JwtAuth(_Model):
    """Bearer JWTs; the keys from ``jwksUri`` (fetched by the operator, cluster only) or
    from a Secret key (``jwksSecretRef``), exactly one."""

    issuer: Annotated[str, Field(min_length=1)]
    audiences: Annotated[list[str], Field(min_length=1)]
    jwks_uri: Annotated[str, Field(pattern=r"^https?://\S+$", max_length=2048)] | None = None
    jwks_secret_ref: SecretKeyRef | None = None
    algorithms: Annotated[list[JwtAlgorithm], Field(min_length=1)] = ["RS256", "ES256"]
    claims_to_headers: list[ClaimHeader] = []

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtAuth:
        if (self.jwks_uri is None) == (self.jwks_secret_ref is None):
            raise ValueError("set exactly one of jwksUri, jwksSecretRef")
        return self


class Require(_Model):
    #: claim -> values it must contain (space-separated string or list claim).
    claims: dict[str, list[str]] = {}


class RouteAuth(_Model):
    """Authentication and authorization of a route or rule (docs/resources.md)."""

    anonymous: bool = False
    api_key: ApiKeyAuth | None = None
    jwt: JwtAuth | None = None
    require: Require | None = None
    forward_credentials: bool = False

    @model_validator(mode="after")
    def _something(self) -> RouteAuth:
        has_method = self.api_key is not None or self.jwt is not None
        if self.anonymous and (has_method or self.require is not None):
            raise ValueError("anonymous: true takes no apiKey, jwt or require")
        if not self.anonymous and not has_method:
            raise ValueError("set apiKey and/or jwt, or anonymous: true")
        if self.require is not None and self.require.claims and self.jwt is None:
            raise ValueError("require.claims needs jwt (API keys carry no claims)")
        return self

    def secret_names(self) -> list[str]:
        names = [self.api_key.secret_ref.name] if self.api_key is not None else []
        if self.jwt is not None and self.jwt.jwks_secret_ref is not None:
            names.append(self.jwt.jwks_secret_ref.name)
        return names


class Match(_Model):
    path: Annotated[str, Field(pattern=r"^/")]
    path_type: Literal["Prefix", "Exact", "Template"] = "Prefix"
    methods: list[Method] = []

    @model_validator(mode="after")
    def _template_syntax(self) -> Match:
        if self.path_type == "Template":
            for segment in self.path.split("/"):
                if ("{" in segment or "}" in segment) and not _TEMPLATE_SEGMENT.match(segment):
                    raise ValueError(
                        f"template segment {segment!r} must be a whole segment like {{id}}"
                    )
        return self


class Backend(_Model):
    function: Annotated[str, Field(pattern=_DNS1123.pattern, max_length=253)]
    weight: Annotated[int, Field(ge=0, le=1000)] = 1


class Rule(_Model):
    match: Match
    function: Annotated[str, Field(pattern=_DNS1123.pattern, max_length=253)] | None = None
    backends: Annotated[list[Backend], Field(min_length=1)] | None = None
    auth: RouteAuth | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Rule:
        if (self.function is None) == (self.backends is None):
            raise ValueError("exactly one of function, backends must be set")
        if self.backends is not None and sum(b.weight for b in self.backends) == 0:
            raise ValueError("backends: at least one weight must be above 0")
        return self

    def targets(self) -> list[Backend]:
        """The weighted backends of this rule (a single function has weight 1)."""
        if self.backends is not None:
            return list(self.backends)
        assert self.function is not None
        return [Backend(function=self.function, weight=1)]


class EdgeRouteSpec(_Model):
    hosts: list[Annotated[str, Field(pattern=_HOST.pattern, max_length=253)]] = []
    rules: Annotated[list[Rule], Field(min_length=1)]
    auth: RouteAuth | None = None

    def auth_of(self, index: int) -> RouteAuth | None:
        """The auth of rule ``index``: its own, else the route's (None or anonymous: open)."""
        own = self.rules[index].auth
        chosen = own if own is not None else self.auth
        return None if chosen is None or chosen.anonymous else chosen

    def secret_names(self) -> list[str]:
        """Every Secret this route's auth reads, once each."""
        return list(dict.fromkeys(n for a in self._auths() for n in a.secret_names()))

    def jwks_uris(self) -> list[str]:
        """Every ``jwt.jwksUri`` of this route's auth, once each."""
        return list(dict.fromkeys(a.jwt.jwks_uri for a in self._auths()
                                  if a.jwt is not None and a.jwt.jwks_uri is not None))

    def _auths(self) -> list[RouteAuth]:
        return [a for a in (self.auth, *(rule.auth for rule in self.rules)) if a is not None]

    def function_names(self) -> list[str]:
        """Every EdgeFunction its rules send requests to, once each, in rule order."""
        return list(dict.fromkeys(b.function for rule in self.rules for b in rule.targets()))


class Metadata(BaseModel):
    """The part of ``metadata`` the runner needs; everything else is ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    name: Annotated[str, Field(pattern=_DNS1123.pattern, max_length=253)]
    namespace: str | None = None
    generation: int | None = None


class EdgeFunction(_Model):
    api_version: Literal["edgerunner.dev/v1alpha1"] = "edgerunner.dev/v1alpha1"
    kind: Literal["EdgeFunction"] = "EdgeFunction"
    metadata: Metadata
    spec: EdgeFunctionSpec
    status: dict[str, Any] | None = None


class EdgeRoute(_Model):
    api_version: Literal["edgerunner.dev/v1alpha1"] = "edgerunner.dev/v1alpha1"
    kind: Literal["EdgeRoute"] = "EdgeRoute"
    metadata: Metadata
    spec: EdgeRouteSpec
    status: dict[str, Any] | None = None


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the offending field."""


def describe_validation_error(exc: ValidationError) -> str:
    """Render pydantic errors as ``spec.limits.memory: message`` lines."""
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts)


def parse_manifest(document: Any) -> EdgeFunction | EdgeRoute:
    """Parse one YAML/JSON document into an EdgeFunction or EdgeRoute.

    Raises :class:`ManifestError` with a message naming the field at fault.
    """
    if not isinstance(document, dict):
        raise ManifestError(f"manifest must be a mapping, got {type(document).__name__}")
    api_version, kind = document.get("apiVersion"), document.get("kind")
    if api_version != API_VERSION:
        raise ManifestError(f"apiVersion: expected {API_VERSION!r}, got {api_version!r}")
    model: type[EdgeFunction] | type[EdgeRoute]
    if kind == KIND_FUNCTION:
        model = EdgeFunction
    elif kind == KIND_ROUTE:
        model = EdgeRoute
    else:
        raise ManifestError(f"kind: expected EdgeFunction or EdgeRoute, got {kind!r}")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        name = (document.get("metadata") or {}).get("name", "?")
        raise ManifestError(f"{kind} {name}: {describe_validation_error(exc)}") from exc
