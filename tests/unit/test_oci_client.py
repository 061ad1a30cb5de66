"""The registry client (edge_api.oci, docs/artifacts.md) against real registries.

Debian's docker-registry (the CNCF distribution registry) runs as a local process
(support.registry): one anonymous over plain HTTP, one with TLS from a CA made here
and htpasswd users, one with ``auth: token`` and a token server (support.registry_tokens).
Artifacts are pushed with the real ``oras`` client, in the plain ``oras push``
layout and in the CNCF Wasm layout.  Checked: tag and digest resolution, both
layouts, basic auth from a dockerconfigjson, the bearer-token flow, TLS verified
against SSL_CERT_FILE, and each bad input's reason: tag not found, not a wasm artifact, a
layer over the size limit, a layer whose bytes do not match its digest (the
registry's storage corrupted on disk), wrong credentials, an unreachable registry.
Pure parsing (references, docker config) is tested without a registry.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
from collections.abc import Iterator

import pytest

from edge_api.fetch import parse_networks
from edge_api.oci import (
    DOCKER_HUB,
    Artifact,
    OciError,
    client_for,
    credentials_from_dockerconfig,
    parse_manifest,
    parse_reference,
)
from support.registry import LocalCA, Registry
from support.registry_tokens import TokenServer
from support.wasm import wat_to_wasm

LOOPBACK = parse_networks("127.0.0.0/8")
MODULE = wat_to_wasm('(module (memory (export "memory") 1))')
OTHER = wat_to_wasm('(module (memory (export "memory") 2))')
USER = ("alice", "s3cret")


def dockerconfig(host: str, user: str, password: str) -> bytes:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {host: {"auth": auth}}}).encode()


@pytest.fixture(scope="module")
def anonymous(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with Registry(tmp_path_factory.mktemp("anonymous")) as registry:
        yield registry


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA.make(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory, ca: LocalCA) -> Iterator[Registry]:
    with Registry(tmp_path_factory.mktemp("private"), ca=ca, users=dict([USER])) as registry:
        yield registry


@pytest.fixture
def trust(ca: LocalCA, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_api.fetch import tls_context
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
    tls_context.cache_clear()


def resolve(ref: str, *, max_bytes: int = 1 << 20, insecure: tuple[str, ...] = (),
            config: bytes | None = None) -> tuple[Artifact, bytes]:
    async def run() -> tuple[Artifact, bytes]:
        client = client_for(ref, dockerconfig=config, allow=LOOPBACK, insecure=insecure,
                            deadline=10)
        artifact = await client.resolve(max_bytes=max_bytes)
        return artifact, await client.blob(artifact.layer_digest, size=artifact.layer_size)
    return asyncio.run(run())


def failure(ref: str, **options: object) -> OciError:
    with pytest.raises(OciError) as caught:
        resolve(ref, **options)  # type: ignore[arg-type]
    return caught.value


def test_both_layouts_resolve_by_tag_and_by_digest(anonymous: Registry) -> None:
    plain = anonymous.push("fn/plain:v1", MODULE)
    cncf = anonymous.push("fn/cncf:v1", MODULE, cncf=True)
    insecure = (anonymous.host,)
    for repo, manifest in (("fn/plain", plain), ("fn/cncf", cncf)):
        artifact, wasm = resolve(f"{anonymous.host}/{repo}:v1", insecure=insecure)
        assert artifact.manifest_digest == manifest and wasm == MODULE
        assert artifact.layer_digest == f"sha256:{hashlib.sha256(MODULE).hexdigest()}"
        assert artifact.reference.pinned(manifest) == f"{anonymous.host}/{repo}@{manifest}"
        by_digest, _ = resolve(f"{anonymous.host}/{repo}@{manifest}", insecure=insecure)
        assert by_digest.manifest_digest == manifest


def test_a_moved_tag_resolves_to_the_new_digest(anonymous: Registry) -> None:
    first = anonymous.push("fn/moving:stable", MODULE)
    second = anonymous.push("fn/moving:stable", OTHER)
    artifact, wasm = resolve(f"{anonymous.host}/fn/moving:stable", insecure=(anonymous.host,))
    assert first != second and artifact.manifest_digest == second and wasm == OTHER


def test_an_insecure_registry_must_be_listed(anonymous: Registry) -> None:
    anonymous.push("fn/tls:v1", MODULE)
    assert failure(f"{anonymous.host}/fn/tls:v1").reason == "RegistryUnreachable"  # TLS


def test_basic_auth_over_verified_tls(private: Registry, trust: None) -> None:
    manifest = private.push("fn/secret:v1", MODULE, cncf=True, user=USER)
    artifact, wasm = resolve(f"{private.host}/fn/secret:v1",
                             config=dockerconfig(private.host, *USER))
    assert (artifact.manifest_digest, wasm) == (manifest, MODULE)
    for config in (None, dockerconfig(private.host, "alice", "wrong"),
                   dockerconfig("other.example:5000", *USER)):
        refused = failure(f"{private.host}/fn/secret:v1", config=config)
        assert (refused.reason, refused.transient) == ("RegistryUnauthorized", True)


def test_tls_is_verified(private: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_api.fetch import tls_context
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    tls_context.cache_clear()
    try:
        refused = failure(f"{private.host}/fn/secret:v1", config=dockerconfig(private.host,
                                                                                  *USER))
        assert refused.reason == "RegistryUnreachable" and "TLS" in refused.message
    finally:
        tls_context.cache_clear()


def test_ssl_cert_file_adds_to_the_system_cas(ca: LocalCA,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """What the chart's registryCA relies on (docs/artifacts.md, "A private CA")."""
    from edge_api.fetch import tls_context

    def subjects() -> set[str]:
        tls_context.cache_clear()
        return {repr(cert["subject"]) for cert in tls_context().get_ca_certs()}

    try:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        system = subjects()
        if not system:
            pytest.skip("no system CA bundle on this machine")
        monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
        both = subjects()
        assert system < both
        assert [s for s in both - system if "edge-test-ca" in s]
    finally:
        tls_context.cache_clear()


def test_bad_artifacts_each_have_their_reason(anonymous: Registry) -> None:
    host, insecure = anonymous.host, (anonymous.host,)
    missing = failure(f"{host}/fn/plain:nope", insecure=insecure)
    assert (missing.reason, missing.transient) == ("TagNotFound", True)
    anonymous.push("fn/text:v1", b"hello", media_type="text/plain")
    assert failure(f"{host}/fn/text:v1", insecure=insecure).reason == "NotWasmArtifact"
    anonymous.push("fn/big:v1", MODULE)
    large = failure(f"{host}/fn/big:v1", insecure=insecure, max_bytes=len(MODULE) - 1)
    assert (large.reason, large.transient) == ("ModuleTooLarge", False)
    with socket.socket() as held:  # bound, never listening: connections are refused
        held.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{held.getsockname()[1]}"
        unreachable = failure(f"{closed}/fn/x:v1", insecure=(closed,))
    assert (unreachable.reason, unreachable.transient) == ("RegistryUnreachable", True)


def test_a_layer_whose_bytes_do_not_match_its_digest(anonymous: Registry) -> None:
    corrupt = wat_to_wasm('(module (memory (export "memory") 3))')
    anonymous.push("fn/corrupt:v1", corrupt)
    digest = hashlib.sha256(corrupt).hexdigest()
    data = anonymous.folder / f"data/docker/registry/v2/blobs/sha256/{digest[:2]}/{digest}/data"
    data.write_bytes(b"\0" * len(corrupt))  # same size, other bytes
    refused = failure(f"{anonymous.host}/fn/corrupt:v1", insecure=(anonymous.host,))
    assert (refused.reason, refused.transient) == ("LayerDigestMismatch", False)
    assert hashlib.sha256(b"\0" * len(corrupt)).hexdigest() not in refused.message


@pytest.mark.parametrize(("ref", "parsed"), [
    ("reg.example.com/team/fn:v1", ("reg.example.com", "team/fn", "v1", None)),
    ("localhost:5000/fn", ("localhost:5000", "fn", "latest", None)),
    ("127.0.0.1:5000/a/b/c@sha256:" + "a" * 64,
     ("127.0.0.1:5000", "a/b/c", None, "sha256:" + "a" * 64)),
    ("hello", (DOCKER_HUB, "library/hello", "latest", None)),
    ("team/fn:v2", (DOCKER_HUB, "team/fn", "v2", None)),
])
def test_references_parse(ref: str, parsed: tuple[str, str, str | None, str | None]) -> None:
    got = parse_reference(ref)
    assert (got.registry, got.repository, got.tag, got.digest) == parsed


@pytest.mark.parametrize("ref", ["reg.example.com/Team/fn:v1", "reg.example.com/fn@sha256:12",
                                 "reg.example.com/fn:bad tag", "reg.example.com/"])
def test_bad_references_are_refused(ref: str) -> None:
    with pytest.raises(OciError) as caught:
        parse_reference(ref)
    assert caught.value.reason == "InvalidReference"


def test_docker_config_entries() -> None:
    config = dockerconfig("reg.example.com", "u", "p:w")
    found = credentials_from_dockerconfig(config, "reg.example.com")
    assert found is not None and (found.username, found.password) == ("u", "p:w")
    explicit = json.dumps({"auths": {"https://reg.example.com/v1/": {
        "username": "x", "password": "y"}}}).encode()
    found = credentials_from_dockerconfig(explicit, "reg.example.com")
    assert found is not None and (found.username, found.password) == ("x", "y")
    assert credentials_from_dockerconfig(config, "other.example.com") is None
    with pytest.raises(OciError):
        credentials_from_dockerconfig(b"not json", "reg.example.com")


def test_manifests_that_are_not_wasm_artifacts() -> None:
    layer = {"mediaType": "application/wasm", "digest": "sha256:" + "b" * 64, "size": 3}
    good = {"config": {"mediaType": "application/vnd.wasm.config.v0+json"}, "layers": [layer]}
    assert parse_manifest(json.dumps(good).encode(), "r") == ("sha256:" + "b" * 64, 3)
    for bad in ({**good, "layers": [layer, layer]},
                {**good, "layers": [{**layer, "mediaType": "application/tar"}]},
                {**good, "config": {"mediaType": "application/vnd.oci.image.config.v1+json"}},
                {**good, "mediaType": "application/vnd.oci.image.index.v1+json"},
                {**good, "layers": [{**layer, "digest": "md5:00"}]}):
        with pytest.raises(OciError) as caught:
            parse_manifest(json.dumps(bad).encode(), "r")
        assert caught.value.reason == "NotWasmArtifact"


def test_the_bearer_token_flow(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("bearer")
    with TokenServer(folder / "tokens", dict([USER])) as tokens, \
            Registry(folder / "registry", token=tokens.registry_auth()) as registry:
        manifest = registry.push("fn/bearer:v1", MODULE, user=USER)
        pushed = tokens.issued
        artifact, wasm = resolve(f"{registry.host}/fn/bearer:v1", insecure=(registry.host,),
                                 config=dockerconfig(registry.host, *USER))
        assert (artifact.manifest_digest, wasm) == (manifest, MODULE)
        assert tokens.issued == pushed + 1  # one token, reused for the blob
        for config in (None, dockerconfig(registry.host, "alice", "wrong")):
            refused = failure(f"{registry.host}/fn/bearer:v1", insecure=(registry.host,),
                              config=config)
            assert (refused.reason, refused.transient) == ("RegistryUnauthorized", True)


def test_the_operator_fetches_a_blob_only_when_its_validation_is_unknown(
        anonymous: Registry) -> None:
    from edge_api.models import Source
    from edge_operator.config import OperatorConfig
    from edge_operator.sources import resolve as resolve_source

    manifest = anonymous.push("fn/known:v1", MODULE)
    source = Source.model_validate({"oci": {"ref": f"{anonymous.host}/fn/known:v1"}})
    config = OperatorConfig(allow_fetch_from=["127.0.0.0/8"],
                            insecure_registries=[anonymous.host])
    asked: list[str] = []

    def run(known: bool) -> tuple[bytes | None, str, int, str | None]:
        def ask(digest: str) -> bool:
            asked.append(digest)
            return known

        async def go() -> tuple[bytes | None, str, int, str | None]:
            found = await resolve_source(source, namespace="ns", kube=None,  # type: ignore[arg-type]
                                         config=config, known=ask)
            assert found.artifact is not None and found.artifact.kind == "oci"
            return found.wasm, found.digest, found.size, found.pinned
        return asyncio.run(go())

    digest = f"sha256:{hashlib.sha256(MODULE).hexdigest()}"
    pinned = f"{anonymous.host}/fn/known@{manifest}"
    assert run(False) == (MODULE, digest, len(MODULE), pinned)
    assert run(True) == (None, digest, len(MODULE), pinned)  # the resync of a known digest
    assert asked == [digest, digest]
