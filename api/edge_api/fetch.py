"""Bounded, address-checked HTTP GETs for everything the operator downloads.

Used by the operator's ``source.url`` fetches (:mod:`edge_operator.sources`), the
registry client (:mod:`edge_api.oci`, in the operator and the runners), and
meant for JWKS fetching: one function, :func:`fetch_bounded`, does the whole
policy of docs/artifacts.md ("Safe fetching"):

* the host name is resolved here, EVERY address it resolves to is checked, and
  the connection goes to a checked address (no second lookup a rebinding DNS
  server could answer differently); each redirect hop is checked the same way;
* addresses that are not globally routable (loopback, link-local, private,
  shared, reserved: what a pod could reach inside the cluster) are refused
  unless they fall in one of ``allow``'s networks
  (``EDGE_OPERATOR_ALLOW_FETCH_FROM``);
* the request says ``Accept-Encoding: identity`` and nothing is ever
  decompressed: a response with another ``Content-Encoding`` is refused, and
  ``max_bytes`` caps the body bytes read off the wire, so a gzip bomb cannot
  inflate;
* ``deadline`` bounds the whole fetch (all hops), ``idle`` each read;
* HTTPS is verified against the system CAs plus ``SSL_CERT_FILE``.

Errors are :class:`FetchError` with a short ``reason``; messages name the URL
and the address refused, never a body or a hash of one.

    response = await fetch_bounded("https://example.com/m.wasm", max_bytes=64 << 20,
                                   deadline=60, allow=parse_networks("10.0.0.0/8"))
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final
from urllib.parse import urljoin, urlsplit

import h11

from edge_api.errors import ReasonedError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Redirect hops followed before giving up.
MAX_REDIRECTS: Final = 5
#: Bytes of status line and headers accepted on top of ``max_bytes``.
MAX_HEAD_BYTES: Final = 64 * 1024
_READ = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class FetchError(ReasonedError):
    """A fetch that did not produce a response.

    ``reason``: ``AddressRefused``, ``TooLarge``, ``EncodingRefused``, ``Timeout``,
    ``Unreachable``, ``TlsFailed``, ``TooManyRedirects``, ``BadUrl`` or
    ``ProtocolError``.
    ``transient``: worth retrying later (the network, not the content).
    """


@dataclass(frozen=True)
class Response:
    status: int
    #: Header names lower-cased; the last value of a repeated header wins.
    headers: Mapping[str, str]
    body: bytes
    #: The URL that answered (after redirects).
    url: str


def parse_networks(text: str | Iterable[str]) -> tuple[Network, ...]:
    """``"10.0.0.0/8,::1/128"`` (or a list of such) -> networks; raises ValueError."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    return tuple(ipaddress.ip_network(part.strip(), strict=False)
                 for part in parts if part.strip())


def refused(address: Address, allow: Sequence[Network] = ()) -> bool:
    """True if the fetch policy refuses to connect to ``address``."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in allow):
        return False
    return not address.is_global or address.is_multicast


@lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    """Verification against the system CAs plus the bundle ``SSL_CERT_FILE`` names."""
    context = ssl.create_default_context()
    paths = ssl.get_default_verify_paths()
    for cafile in (paths.openssl_cafile, os.environ.get("SSL_CERT_FILE")):
        if cafile and os.path.isfile(cafile):
            context.load_verify_locations(cafile=cafile)
    return context


async def _addresses(host: str, port: int, allow: Sequence[Network]) -> list[str]:
    """Every address ``host`` resolves to, all checked; raises FetchError."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise FetchError("Unreachable", f"cannot resolve {host}: {exc}", transient=True) from exc
    found = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for text in found:
        if refused(ipaddress.ip_address(text.split("%")[0]), allow):
            raise FetchError("AddressRefused", f"{host} resolves to {text}, which is not a"
                             " public address (allow it with EDGE_OPERATOR_ALLOW_FETCH_FROM)")
    if not found:
        raise FetchError("Unreachable", f"{host} has no address", transient=True)
    return found


async def _connect(scheme: str, host: str, port: int, allow: Sequence[Network]
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    last: OSError | None = None
    for address in await _addresses(host, port, allow):
        try:
            if scheme == "https":
                return await asyncio.open_connection(address, port, ssl=tls_context(),
                                                      server_hostname=host)
            return await asyncio.open_connection(address, port)
        except ssl.SSLError as exc:
            raise FetchError("TlsFailed", f"TLS with {host}: {exc.reason or exc}",
                             transient=True) from exc
        except OSError as exc:
            last = exc
    raise FetchError("Unreachable", f"cannot connect to {host}:{port}: {last}", transient=True)


async def _exchange(url: str, headers: Mapping[str, str], *, max_bytes: int, idle: float,
                    allow: Sequence[Network]) -> Response:
    """One request/response on a fresh connection to a checked address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError("BadUrl", f"not an http(s) URL: {url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rpartition("@")[2]
    reader, writer = await _connect(parts.scheme, parts.hostname, port, allow)
    connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
    request_headers = [("host", host_header), ("accept-encoding", "identity"),
                       ("user-agent", "edge-runner"), ("connection", "close"),
                       *((k.lower(), v) for k, v in headers.items())]
    try:
        writer.write(connection.send(h11.Request(method="GET", target=target,
                                                 headers=request_headers)) or b"")
        writer.write(connection.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        status, got, body, size = 0, {}, bytearray(), 0
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(reader.read(_READ), idle)
                connection.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                got = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
                encoding = got.get("content-encoding", "identity").strip().lower()
                if encoding not in ("", "identity") and status not in _REDIRECTS:
                    raise FetchError("EncodingRefused", f"GET {url}: the server sent"
                                     f" Content-Encoding {encoding[:40]} (asked for identity)")
                declared = got.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise FetchError("TooLarge", f"GET {url}: {declared} bytes, over the"
                                     f" limit of {max_bytes}")
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > max_bytes:
                    raise FetchError("TooLarge", f"GET {url}: more than {max_bytes} bytes")
                body += event.data
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                if not status:
                    raise FetchError("ProtocolError", f"GET {url}: closed before answering",
                                     transient=True)
                return Response(status, got, bytes(body), url)
    except h11.RemoteProtocolError as exc:
        raise FetchError("ProtocolError", f"GET {url}: {exc}", transient=True) from exc
    except (TimeoutError, OSError) as exc:
        raise FetchError("Unreachable", f"GET {url}: {type(exc).__name__} {exc}",
                         transient=True) from exc
    finally:
        writer.close()


async def fetch_bounded(url: str, *, max_bytes: int, deadline: float,
                        allow: Sequence[Network] = (), headers: Mapping[str, str] | None = None,
                        idle: float = 30.0, max_redirects: int = MAX_REDIRECTS) -> Response:
    """GET ``url`` under the fetch policy (module docstring); any status is returned.

    Redirects (301/302/303/307/308) are followed up to ``max_redirects`` hops, each
    checked like the first; ``Authorization`` is dropped when a hop leaves the
    original scheme, host and port.  Raises :class:`FetchError`.
    """
    sent = dict(headers or {})
    origin = urlsplit(url)[:2]
    try:
        async with asyncio.timeout(deadline):
            for _ in range(max_redirects + 1):
                response = await _exchange(url, sent, max_bytes=max_bytes, idle=idle,
                                           allow=allow)
                location = response.headers.get("location")
                if response.status not in _REDIRECTS or not location:
                    return response
                url = urljoin(url, location)
                if urlsplit(url)[:2] != origin:
                    sent = {k: v for k, v in sent.items() if k.lower() != "authorization"}
    except TimeoutError as exc:
        raise FetchError("Timeout", f"GET {url}: not done within {deadline:g}s",
                         transient=True) from exc
    raise FetchError("TooManyRedirects", f"GET {url}: more than {max_redirects} redirects")
