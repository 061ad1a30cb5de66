"""A runner's modules by reference (edge_runner.sources.artifacts, wasm.blobs), in process.

The reference is a ``url`` one served by a real HTTP server on loopback; an ``oci``
one from the real registry is covered by tests/k8s/test_oci.py.  Checked: one download
per digest however many loads ask at once, the sha256 and size verified (a wrong body
is never served and is retried), the blob store on disk used by a new runner while the
source is down, a corrupt blob file ignored, the reference format of the wire.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any, cast

import pytest
from lightkube import AsyncClient

from edge_api.artifacts import ArtifactRef
from edge_api.wire import FunctionConfig, WireError, function_configmap, parse_configmap
from edge_runner.metrics import RunnerMetrics
from edge_runner.sources.artifacts import Artifacts
from edge_runner.wasm.blobs import BlobStore
from support.fileserver import FileServer, Reply

MODULE = b"\0asm\1\0\0\0" + b"\x00\x03" * 1000
DIGEST = f"sha256:{hashlib.sha256(MODULE).hexdigest()}"


def ref(url: str) -> ArtifactRef:
    return ArtifactRef("url", url, DIGEST, len(MODULE), allow=("127.0.0.0/8",))


def artifacts(folder: Path | None) -> Artifacts:
    return Artifacts(kube=cast(AsyncClient, None), namespace="ns", store=BlobStore(folder),
                     metrics=RunnerMetrics())


async def settle(store: Artifacts, reference: ArtifactRef) -> bytes | str:
    """Ask like concurrent loads do, until the fetch finished or failed once."""
    answers = [store.module(reference) for _ in range(5)]
    assert all(isinstance(a, str) and "fetching url" in a for a in answers)
    await asyncio.wait_for(store.changed.wait(), 10)
    store.changed.clear()
    return store.module(reference)


def test_one_download_per_digest_then_the_disk(tmp_path: Path) -> None:
    with FileServer() as files:
        files.routes["/m.wasm"] = Reply(body=MODULE)
        first = artifacts(tmp_path)
        assert asyncio.run(settle(first, ref(files.url + "/m.wasm"))) == MODULE
        assert files.hits == {"/m.wasm": 1}
        fetched = first.metrics.artifact_bytes.labels("url")._value.get()  # type: ignore[union-attr]
        assert fetched == len(MODULE)
    # The source is gone; a restarted runner finds the module in its blob store.
    second = artifacts(tmp_path)
    assert asyncio.run(settle(second, ref(files.url + "/m.wasm"))) == MODULE
    assert (tmp_path / f"{DIGEST[7:]}.wasm").read_bytes() == MODULE


def test_wrong_bytes_are_never_served_and_are_retried(tmp_path: Path) -> None:
    async def run(files: FileServer) -> tuple[Any, Any]:
        store = artifacts(tmp_path)
        reference = ref(files.url + "/m.wasm")
        failed = await settle(store, reference)
        files.routes["/m.wasm"] = Reply(body=MODULE)
        await asyncio.wait_for(store.changed.wait(), 10)  # the retry, 1 s later
        return failed, store.module(reference)

    with FileServer() as files:
        files.routes["/m.wasm"] = Reply(body=MODULE[:-1] + b"\1")
        failed, fixed = asyncio.run(run(files))
    assert isinstance(failed, str) and "not sha256:" in failed
    assert fixed == MODULE and files.hits["/m.wasm"] == 2


def test_a_corrupt_blob_file_is_removed(tmp_path: Path) -> None:
    (tmp_path / f"{DIGEST[7:]}.wasm").write_bytes(b"tampered")
    assert BlobStore(tmp_path).load(DIGEST) is None
    assert not (tmp_path / f"{DIGEST[7:]}.wasm").exists()
    with pytest.raises(ValueError):
        BlobStore(tmp_path).load("sha256:../../etc/passwd")


def test_a_reference_travels_in_the_configmap_instead_of_the_bytes() -> None:
    from edge_api.models import EdgeFunctionSpec
    spec = EdgeFunctionSpec.model_validate({"source": {"oci": {"ref": "r.example/fn:v1"}}})
    reference = ArtifactRef("oci", "r.example/fn@sha256:" + "c" * 64, DIGEST, 5 << 20,
                            pull_secret="regcred")
    configmap = function_configmap(name="fn", namespace="ns", spec=spec, artifact=reference)
    assert "binaryData" not in configmap
    parsed = parse_configmap(configmap)
    assert parsed == FunctionConfig("fn", spec, b"", DIGEST, reference)
    configmap["data"]["digest"] = "sha256:" + "0" * 64
    with pytest.raises(WireError):
        parse_configmap(configmap)
