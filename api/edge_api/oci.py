"""A small OCI distribution client: resolve a Wasm artifact, fetch its blob by digest.

Used by the operator (:mod:`edge_operator.sources`: resolve a tag, validate the
module) and by the runners (:mod:`edge_runner.sources.artifacts`: fetch the
published digest).  Every request goes through :func:`edge_api.fetch.fetch_bounded`
(address policy, byte caps, deadline, TLS against system CAs + SSL_CERT_FILE).
docs/artifacts.md is the contract.

* references: ``registry/repo:tag``, ``registry/repo@sha256:...`` (:func:`parse_reference`);
* auth as registries do it: anonymous first; on ``401`` with
  ``WWW-Authenticate: Basic`` the credentials, with ``Bearer realm=..,service=..,
  scope=..`` a token from the realm (credentials as basic auth if any);
* layouts: exactly one layer ``application/wasm`` and a config of the CNCF Wasm
  artifact (``application/vnd.wasm.config.v0+json``) or of ``oras push``
  (empty or unknown config); anything else is ``NotWasmArtifact``;
* HTTPS, or plain HTTP for a registry named in ``insecure`` (``host[:port]``).

Errors are :class:`OciError` (reason, message, transient).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from edge_api.errors import ReasonedError
from edge_api.fetch import FetchError, Network, Response, fetch_bounded

WASM_LAYER: Final = "application/wasm"
WASM_CONFIG: Final = "application/vnd.wasm.config.v0+json"
#: Config media types of a plain ``oras push REF module.wasm:application/wasm``.
ORAS_CONFIGS: Final = frozenset({"application/vnd.oci.empty.v1+json",
                                 "application/vnd.unknown.config.v1+json"})
MANIFEST_TYPES: Final = ("application/vnd.oci.image.manifest.v1+json",
                         "application/vnd.docker.distribution.manifest.v2+json")
MAX_MANIFEST_BYTES: Final = 4 * 2**20
MAX_TOKEN_BYTES: Final = 1 * 2**20
DOCKER_HUB: Final = "registry-1.docker.io"

_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_REPO = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


class OciError(ReasonedError):
    """A reference that could not be resolved or fetched; ``reason`` is a condition reason."""


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repo(self) -> str:
        """``registry/repository``."""
        return f"{self.registry}/{self.repository}"

    def pinned(self, digest: str) -> str:
        """``registry/repository@digest``: what ``status.artifact`` shows."""
        return f"{self.repo}@{digest}"


def parse_reference(ref: str) -> Reference:
    """``host[:port]/repo[:tag][@sha256:...]`` -> :class:`Reference`; raises OciError."""
    rest, _, digest = ref.partition("@")
    if digest and not _DIGEST.match(digest):
        raise OciError("InvalidReference", f"{ref}: digest must be sha256:<64 hex>")
    registry, slash, path = rest.partition("/")
    if not slash or not ("." in registry or ":" in registry or registry == "localhost"):
        registry, path = DOCKER_HUB, rest if "/" in rest else f"library/{rest}"
    repository, colon, tag = path.rpartition(":") if ":" in path else (path, "", "")
    if not colon:
        repository, tag = path, ""
    if not _REPO.match(repository) or (tag and not _TAG.match(tag)):
        raise OciError("InvalidReference", f"{ref} is not a registry/repository[:tag]"
                       "[@sha256:digest] reference")
    if not tag and not digest:
        tag = "latest"
    return Reference(registry, repository, tag or None, digest or None)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


def credentials_from_dockerconfig(data: bytes, registry: str) -> Credentials | None:
    """The entry for ``registry`` in a ``.dockerconfigjson``; raises OciError if unreadable."""
    try:
        auths = json.loads(data).get("auths") or {}
    except (ValueError, AttributeError) as exc:
        raise OciError("PullSecretInvalid", f"the pull secret is not docker config JSON:"
                       f" {type(exc).__name__}") from exc
    if not isinstance(auths, dict):
        raise OciError("PullSecretInvalid", "the pull secret's auths is not an object")
    for key, entry in auths.items():
        host = re.sub(r"^https?://", "", str(key)).split("/")[0]
        if host != registry or not isinstance(entry, dict):
            continue
        if entry.get("username") is not None:
            return Credentials(str(entry["username"]), str(entry.get("password", "")))
        if entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            return Credentials(user, password)
    return None


@dataclass(frozen=True)
class Artifact:
    """A resolved Wasm artifact: the manifest's digest and its one layer."""

    reference: Reference
    manifest_digest: str
    layer_digest: str
    layer_size: int


def parse_manifest(body: bytes, ref: str) -> tuple[str, int]:
    """The (digest, size) of the wasm layer of a manifest; raises OciError NotWasmArtifact."""
    try:
        manifest: Any = json.loads(body)
    except ValueError as exc:
        raise OciError("NotWasmArtifact", f"{ref}: the manifest is not JSON") from exc
    if not isinstance(manifest, dict):
        raise OciError("NotWasmArtifact", f"{ref}: the manifest is not an object")
    media = manifest.get("mediaType")
    if media is not None and media not in MANIFEST_TYPES:
        raise OciError("NotWasmArtifact", f"{ref}: manifest type {str(media)[:80]} is not an"
                       " image manifest (an index or a list is not a wasm artifact)")
    layers = manifest.get("layers")
    config = manifest.get("config")
    config_type = config.get("mediaType") if isinstance(config, dict) else None
    if config_type != WASM_CONFIG and config_type not in ORAS_CONFIGS:
        raise OciError("NotWasmArtifact", f"{ref}: config type {str(config_type)[:80]} is"
                       f" neither {WASM_CONFIG} nor an oras artifact's")
    if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict) \
            or layers[0].get("mediaType") != WASM_LAYER:
        raise OciError("NotWasmArtifact", f"{ref}: a wasm artifact has exactly one layer of"
                       f" type {WASM_LAYER}")
    digest, size = layers[0].get("digest"), layers[0].get("size")
    if not isinstance(digest, str) or not _DIGEST.match(digest) or not isinstance(size, int) \
            or size < 0:
        raise OciError("NotWasmArtifact", f"{ref}: the layer has no sha256 digest and size")
    return digest, size


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE.findall(params))


@dataclass
class RegistryClient:
    """Talks to one registry for one reference's repository (pull only)."""

    reference: Reference
    credentials: Credentials | None = None
    allow: Sequence[Network] = ()
    insecure: frozenset[str] = frozenset()
    deadline: float = 120.0
    _authorization: str | None = field(default=None, repr=False)

    @property
    def base(self) -> str:
        scheme = "http" if self.reference.registry in self.insecure else "https"
        return f"{scheme}://{self.reference.registry}/v2/{self.reference.repository}"

    async def _get(self, url: str, *, max_bytes: int, accept: str | None = None) -> Response:
        headers = {"accept": accept} if accept else {}
        for _ in range(2):
            if self._authorization:
                headers["authorization"] = self._authorization
            response = await self._fetch(url, max_bytes=max_bytes, headers=headers)
            if response.status != 401 or not await self._authenticate(response):
                break
        if response.status in (401, 403):
            raise self._unauthorized(f"HTTP {response.status}")
        return response

    async def _fetch(self, url: str, *, max_bytes: int, headers: dict[str, str]) -> Response:
        """One GET under this client's deadline and address policy; raises OciError."""
        try:
            return await fetch_bounded(url, max_bytes=max_bytes, deadline=self.deadline,
                                       allow=self.allow, headers=headers)
        except FetchError as exc:
            raise _registry_error(exc) from exc

    def _unauthorized(self, answer: str) -> OciError:
        return OciError("RegistryUnauthorized", f"{self.reference.repo}: {answer}"
                        " (check the pull secret)", transient=True)

    async def _authenticate(self, response: Response) -> bool:
        """Pick up credentials for a 401; False if there is nothing new to try."""
        scheme, params = _challenge(response.headers.get("www-authenticate", ""))
        if scheme == "basic":
            if self.credentials is None or self._authorization is not None:
                return False
            self._authorization = self.credentials.basic()
            return True
        if scheme != "bearer" or "realm" not in params or (
                self._authorization or "").startswith("Bearer "):
            return False
        query = "&".join(f"{k}={params[k]}" for k in ("service", "scope") if k in params)
        headers = {"authorization": self.credentials.basic()} if self.credentials else {}
        realm = params["realm"] + ("&" if "?" in params["realm"] else "?") + query
        answer = await self._fetch(realm, max_bytes=MAX_TOKEN_BYTES, headers=headers)
        if answer.status in (401, 403):
            raise self._unauthorized(f"the token server answered HTTP {answer.status}")
        try:
            token = json.loads(answer.body)
            value = token.get("token") or token.get("access_token")
        except (ValueError, AttributeError):
            value = None
        if answer.status != 200 or not isinstance(value, str):
            raise OciError("RegistryUnreachable", f"{self.reference.repo}: the token server"
                           f" answered HTTP {answer.status} without a token", transient=True)
        self._authorization = f"Bearer {value}"
        return True

    async def resolve(self, *, max_bytes: int) -> Artifact:
        """The manifest the reference names now, checked to be a wasm artifact."""
        ref = self.reference
        name = ref.digest or ref.tag or "latest"
        response = await self._get(f"{self.base}/manifests/{name}",
                                   max_bytes=MAX_MANIFEST_BYTES, accept=", ".join(MANIFEST_TYPES))
        if response.status == 404:
            raise OciError("TagNotFound", f"{ref.repo}:{name} not found in the registry",
                           transient=True)
        if response.status != 200:
            raise OciError("RegistryUnreachable", f"{ref.repo}: manifest {name}: HTTP"
                           f" {response.status}", transient=True)
        digest = f"sha256:{hashlib.sha256(response.body).hexdigest()}"
        if ref.digest and digest != ref.digest:
            raise OciError("ManifestDigestMismatch", f"{ref.repo}: the registry returned a"
                           f" manifest that is not {ref.digest}")
        layer, size = parse_manifest(response.body, f"{ref.repo}@{digest}")
        if size > max_bytes:
            raise OciError("ModuleTooLarge", f"{ref.repo}@{digest}: the module is {size}"
                           f" bytes, over the limit of {max_bytes}")
        return Artifact(ref, digest, layer, size)

    async def blob(self, digest: str, *, size: int) -> bytes:
        """The blob ``digest`` of ``size`` bytes, its sha256 verified."""
        response = await self._get(f"{self.base}/blobs/{digest}", max_bytes=size)
        if response.status == 404:
            raise OciError("BlobNotFound", f"{self.reference.repo}: blob {digest} not found",
                           transient=True)
        if response.status != 200:
            raise OciError("RegistryUnreachable", f"{self.reference.repo}: blob {digest}: HTTP"
                           f" {response.status}", transient=True)
        actual = await asyncio.to_thread(lambda: hashlib.sha256(response.body).hexdigest())
        if f"sha256:{actual}" != digest:
            raise OciError("LayerDigestMismatch", f"{self.reference.repo}: the blob served as"
                           f" {digest} has another sha256")
        return response.body


def _registry_error(exc: FetchError) -> OciError:
    if exc.reason == "TooLarge":
        return OciError("ModuleTooLarge", exc.message)
    if exc.reason in ("AddressRefused", "EncodingRefused", "BadUrl"):
        return OciError(exc.reason, exc.message)
    return OciError("RegistryUnreachable", exc.message, transient=True)


def client_for(ref: str, *, dockerconfig: bytes | None = None, allow: Sequence[Network] = (),
               insecure: Sequence[str] = (), deadline: float = 120.0) -> RegistryClient:
    """A client for ``ref`` with the credentials a pull secret holds for its registry."""
    reference = parse_reference(ref)
    credentials = credentials_from_dockerconfig(dockerconfig, reference.registry) \
        if dockerconfig is not None else None
    return RegistryClient(reference, credentials, tuple(allow), frozenset(insecure), deadline)


def dockerconfig_of(secret: Mapping[str, Any], name: str) -> bytes:
    """The ``.dockerconfigjson`` of a Secret object (dict form); raises OciError."""
    if secret.get("type") != "kubernetes.io/dockerconfigjson":
        raise OciError("PullSecretInvalid", f"secret {name} is not of type"
                       " kubernetes.io/dockerconfigjson")
    encoded = (secret.get("data") or {}).get(".dockerconfigjson")
    if not isinstance(encoded, str):
        raise OciError("PullSecretInvalid", f"secret {name} has no .dockerconfigjson")
    return base64.b64decode(encoded)
