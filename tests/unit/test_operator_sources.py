"""``source.url`` downloads of the operator (edge_operator.sources), in process, from a
real HTTP server on loopback (support.fileserver).

docs/resources.md: ``GET``, redirects followed, status 200 needed, at most
``--max-module-bytes``, the sha256 checked.  Reasons and transience as in its table:
``FetchFailed`` is transient (retried), ``DigestMismatch`` and ``ModuleTooLarge`` are
not.  What the operator makes of them (conditions, retries, ConfigMaps) is tested
against the real API server in tests/k8s/test_sources.py; configMapRef only there.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import Cluster, User

from edge_api.k8s import async_client
from edge_api.models import Source
from edge_operator.config import OperatorConfig
from edge_operator.sources import SourceError, resolve
from support.fileserver import GZIP_BOMB, GZIP_BOMB_SHA256, FileServer, Reply, redirect
from support.runner import free_port

MODULE = b"\x00asm\x01\x00\x00\x00" + bytes(range(256)) * 4
SHA = hashlib.sha256(MODULE).hexdigest()


@pytest.fixture
def files() -> Iterator[FileServer]:
    with FileServer() as server:
        server.routes["/m.wasm"] = Reply(body=MODULE)
        yield server


def fetch(url: str, sha256: str = SHA, **config: Any) -> bytes:
    async def run() -> bytes:
        kube: AsyncClient = async_client(KubeConfig.from_one(  # never called for a url
            cluster=Cluster(server="http://127.0.0.1:9"), user=User()).get(), field_manager="t")
        try:
            config.setdefault("allow_fetch_from", "127.0.0.0/8")  # the server is on loopback
            resolved = await resolve(
                Source.model_validate({"url": {"url": url, "sha256": sha256}}), namespace="ns",
                kube=kube, config=OperatorConfig.model_validate(config))
            assert resolved.wasm is not None
            return resolved.wasm
        finally:
            await kube.close()

    return asyncio.run(run())


def refusal(url: str, sha256: str = SHA, **config: Any) -> SourceError:
    with pytest.raises(SourceError) as caught:
        fetch(url, sha256, **config)
    return caught.value


def test_the_module_with_its_sha256_is_fetched_once(files: FileServer) -> None:
    assert fetch(files.url + "/m.wasm") == MODULE
    assert files.hits == {"/m.wasm": 1}


def test_a_different_sha256_is_refused_for_good(files: FileServer) -> None:
    wrong = hashlib.sha256(b"another module").hexdigest()
    error = refusal(files.url + "/m.wasm", wrong)
    assert (error.reason, error.transient) == ("DigestMismatch", False)
    assert SHA in error.message and wrong in error.message


def test_redirects_are_followed_and_the_target_is_checked(files: FileServer) -> None:
    files.routes["/old"] = redirect("/m.wasm", 301)
    files.routes["/hop"] = redirect(files.url + "/old", 307)
    assert fetch(files.url + "/hop") == MODULE
    assert files.hits == {"/hop": 1, "/old": 1, "/m.wasm": 1}
    files.routes["/elsewhere"] = redirect("/other.wasm")
    files.routes["/other.wasm"] = Reply(body=b"\x00asm\x01\x00\x00\x00")
    assert refusal(files.url + "/elsewhere").reason == "DigestMismatch"


@pytest.mark.parametrize("status", [404, 500, 204, 206])
def test_a_status_other_than_200_is_a_transient_fetch_failure(files: FileServer, status: int
                                                              ) -> None:
    files.routes["/m.wasm"] = Reply(status, MODULE)
    error = refusal(files.url + "/m.wasm")
    assert (error.reason, error.transient) == ("FetchFailed", True)
    assert f"HTTP {status}" in error.message


def test_an_unreachable_server_is_a_transient_fetch_failure() -> None:
    error = refusal(f"http://127.0.0.1:{free_port()}/m.wasm")
    assert (error.reason, error.transient) == ("FetchFailed", True)


def test_a_server_slower_than_url_timeout_is_a_transient_fetch_failure(files: FileServer
                                                                       ) -> None:
    files.routes["/m.wasm"] = Reply(body=MODULE, delay=1.0)
    error = refusal(files.url + "/m.wasm", url_timeout=0.2)
    assert (error.reason, error.transient) == ("FetchFailed", True)


def test_a_download_over_max_module_bytes_is_refused_for_good(files: FileServer) -> None:
    assert fetch(files.url + "/m.wasm", max_module_bytes=len(MODULE)) == MODULE  # at the limit
    error = refusal(files.url + "/m.wasm", max_module_bytes=len(MODULE) - 1)
    assert (error.reason, error.transient) == ("ModuleTooLarge", False)
    assert str(len(MODULE) - 1) in error.message


def test_the_operator_refuses_a_gzip_bomb_url_for_good(files: FileServer) -> None:
    files.routes["/bomb"] = Reply(body=GZIP_BOMB, headers={"content-encoding": "gzip"})
    source = refusal(files.url + "/bomb", GZIP_BOMB_SHA256)
    assert (source.reason, source.transient) == ("EncodingRefused", False)


def test_the_operator_refuses_loopback_unless_allowed(files: FileServer) -> None:
    sha = hashlib.sha256(b"\0asm\1\0\0\0").hexdigest()
    source = refusal(files.url + "/m.wasm", sha, allow_fetch_from="")
    assert (source.reason, source.transient) == ("AddressRefused", False)
    assert sha not in source.message and files.hits == {}
    files.routes["/hop"] = redirect("http://127.0.0.2:9/m.wasm")
    assert refusal(files.url + "/hop", sha, allow_fetch_from="127.0.0.1/32"
                   ).reason == "AddressRefused"
