"""The operator's JWKS fetch (edge_operator.jwks) goes through the one fetch policy:
an address that is not public is refused unless allowed, a redirect is checked
again, a compressed or oversized answer is refused; the message says why without
quoting the body.  Real HTTP on loopback (support.fileserver)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from edge_api.fetch import parse_networks
from edge_operator.jwks import FetchError, fetch_document
from support.fileserver import GZIP_BOMB, FileServer, Reply, redirect

LOOPBACK = parse_networks("127.0.0.0/8")
JWKS = json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}).encode()


@pytest.fixture
def files() -> Iterator[FileServer]:
    with FileServer() as server:
        server.routes["/jwks.json"] = Reply(body=JWKS)
        yield server


def fetch(url: str, **kwargs: object) -> bytes:
    return asyncio.run(fetch_document(url, **kwargs))  # type: ignore[arg-type]


def test_a_loopback_jwks_uri_is_refused_unless_allowed(files: FileServer) -> None:
    with pytest.raises(FetchError, match="AddressRefused"):
        fetch(files.url + "/jwks.json")
    assert files.hits["/jwks.json"] == 0
    assert fetch(files.url + "/jwks.json", allow=LOOPBACK) == JWKS


def test_a_redirect_to_an_address_not_allowed_is_refused(files: FileServer) -> None:
    files.routes["/moved"] = redirect("http://169.254.169.254/latest/meta-data/")
    with pytest.raises(FetchError, match="AddressRefused"):
        fetch(files.url + "/moved", allow=LOOPBACK)


def test_compressed_and_oversized_answers_are_refused(files: FileServer) -> None:
    files.routes["/bomb"] = Reply(body=GZIP_BOMB, headers={"content-encoding": "gzip"})
    with pytest.raises(FetchError, match="EncodingRefused"):
        fetch(files.url + "/bomb", allow=LOOPBACK)
    files.routes["/big"] = Reply(body=b"{" + b" " * 70_000 + b"}")
    with pytest.raises(FetchError, match="TooLarge") as caught:
        fetch(files.url + "/big", allow=LOOPBACK)
    assert "   " not in str(caught.value)
    files.routes["/gone"] = Reply(404, b"secret body")
    with pytest.raises(FetchError, match="HTTP 404") as caught:
        fetch(files.url + "/gone", allow=LOOPBACK)
    assert "secret" not in str(caught.value)
