"""Safe fetching (edge_api.fetch, docs/artifacts.md "Safe fetching"), against a real HTTP
server on loopback (support.fileserver), and through the operator's ``source.url``.

Checked: non-public addresses refused unless ``allow`` holds them, on every redirect
hop and for names as well as literals; ``Accept-Encoding: identity`` and no
decompression (a gzip bomb is refused, not inflated); the byte cap counts bytes read
off the wire; the overall deadline; the redirect bound.  What the operator's
``source.url`` makes of them: tests/unit/test_operator_sources.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterator
from typing import Any

import pytest

from edge_api.fetch import FetchError, Response, fetch_bounded, parse_networks, refused
from support.fileserver import GZIP_BOMB as BOMB
from support.fileserver import FileServer, Reply, redirect

LOOPBACK = parse_networks("127.0.0.0/8")


@pytest.fixture
def files() -> Iterator[FileServer]:
    with FileServer() as server:
        server.routes["/m.wasm"] = Reply(body=b"\0asm\1\0\0\0")
        yield server


def fetch(url: str, **options: Any) -> Response:
    options.setdefault("max_bytes", 1 << 20)
    options.setdefault("deadline", 10.0)
    return asyncio.run(fetch_bounded(url, **options))


def error(url: str, **options: Any) -> FetchError:
    with pytest.raises(FetchError) as caught:
        fetch(url, **options)
    return caught.value


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1",
                                     "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1",
                                     "fe80::1", "fd00::1", "::ffff:127.0.0.1", "224.0.0.1"])
def test_addresses_that_are_not_public_are_refused(address: str) -> None:
    assert refused(ipaddress.ip_address(address))


def test_public_addresses_and_allowed_networks_pass() -> None:
    assert not refused(ipaddress.ip_address("8.8.8.8"))
    assert not refused(ipaddress.ip_address("2001:4860:4860::8888"))
    assert not refused(ipaddress.ip_address("10.1.2.3"), parse_networks("10.0.0.0/8"))
    assert not refused(ipaddress.ip_address("::ffff:10.1.2.3"), parse_networks("10.0.0.0/8"))
    assert refused(ipaddress.ip_address("10.1.2.3"), parse_networks("10.2.0.0/16"))


def test_loopback_is_refused_by_default_and_fetched_when_allowed(files: FileServer) -> None:
    refusal_ = error(files.url + "/m.wasm")
    assert refusal_.reason == "AddressRefused" and "127.0.0.1" in refusal_.message
    assert files.hits == {}  # refused before connecting
    answer = fetch(files.url + "/m.wasm", allow=LOOPBACK)
    assert (answer.status, answer.body) == (200, b"\0asm\1\0\0\0")


def test_a_name_is_checked_by_every_address_it_resolves_to(files: FileServer) -> None:
    port = files.url.rsplit(":", 1)[1]
    assert error(f"http://localhost:{port}/m.wasm").reason == "AddressRefused"
    assert fetch(f"http://localhost:{port}/m.wasm", allow=parse_networks(
        "127.0.0.0/8,::1/128")).status == 200


def test_a_private_address_is_refused_without_connecting() -> None:
    started = time.monotonic()
    assert error("http://10.255.255.1/m.wasm").reason == "AddressRefused"
    assert time.monotonic() - started < 1.0  # no connection attempt to time out


def test_a_redirect_to_a_refused_address_is_refused(files: FileServer) -> None:
    port = files.url.rsplit(":", 1)[1]
    files.routes["/hop"] = redirect(f"http://127.0.0.2:{port}/m.wasm")
    files.routes["/meta"] = redirect("http://169.254.169.254/latest/meta-data/")
    only_first = parse_networks("127.0.0.1/32")
    for path, address in (("/hop", "127.0.0.2"), ("/meta", "169.254.169.254")):
        refusal_ = error(files.url + path, allow=only_first)
        assert refusal_.reason == "AddressRefused" and address in refusal_.message
    assert files.hits == {"/hop": 1, "/meta": 1}


def test_a_gzip_bomb_is_refused_not_inflated(files: FileServer) -> None:
    files.routes["/bomb"] = Reply(body=BOMB, headers={"content-encoding": "gzip"})
    started = time.monotonic()
    refusal_ = error(files.url + "/bomb", allow=LOOPBACK, max_bytes=64 << 20)
    assert refusal_.reason == "EncodingRefused" and "gzip" in refusal_.message
    assert time.monotonic() - started < 2.0
    # Without the header the bytes arrive as they are, compressed, never inflated.
    files.routes["/bomb"] = Reply(body=BOMB)
    assert fetch(files.url + "/bomb", allow=LOOPBACK).body == BOMB


def test_the_byte_cap_counts_bytes_read(files: FileServer) -> None:
    files.routes["/big"] = Reply(body=b"x" * 5000)
    assert len(fetch(files.url + "/big", allow=LOOPBACK, max_bytes=5000).body) == 5000
    assert error(files.url + "/big", allow=LOOPBACK, max_bytes=4999).reason == "TooLarge"


def test_the_deadline_covers_the_whole_fetch(files: FileServer) -> None:
    files.routes["/slow"] = Reply(body=b"late", delay=2.0)
    started = time.monotonic()
    refusal_ = error(files.url + "/slow", allow=LOOPBACK, deadline=0.3)
    assert (refusal_.reason, refusal_.transient) == ("Timeout", True)
    assert time.monotonic() - started < 1.5


def test_redirect_hops_are_bounded(files: FileServer) -> None:
    files.routes["/loop"] = redirect("/loop")
    assert error(files.url + "/loop", allow=LOOPBACK).reason == "TooManyRedirects"
    assert files.hits["/loop"] == 6
