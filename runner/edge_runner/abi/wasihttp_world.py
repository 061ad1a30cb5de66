"""The rest of the ``wasi:http/proxy`` world, and the linker a component runs with.

Used by :mod:`edge_runner.abi.wasihttp`.  :func:`build_linker` defines every
interface of the proxy world a guest may import: ``wasi:http/types`` and
``wasi:io`` from :mod:`edge_runner.abi.wasihttp_host`; here the sandbox
(docs/abi.md): ``wasi:cli/environment`` shows only ``spec.env``; stdout and
stderr go to the runner's log, bounded; stdin is empty; there are no preopened
directories (so no file can be opened); sockets and outgoing HTTP are
refused with their interfaces' own error codes (``access-denied``,
``HTTP-request-denied``).  Any other import of the component is defined as a
function that traps, so a call to it fails that request (502), never the
runner.  The interfaces are written for 0.2.0 and defined under the exact
0.2.x version each component imports (all 0.2.x are compatible; wasmtime's
trap definitions for unknown imports would not see a semver match).
"""

from __future__ import annotations

import os
import time
import typing

import wasmtime
from wasmtime.component import Component, Linker, Record, ResourceType

from edge_runner.abi import wasihttp_host as host
from edge_runner.errors import GuestFailure
from edge_runner.wasm import capi

#: What ``get-random-bytes`` hands out per call at most (a guest asking for more traps).
MAX_RANDOM = 1 << 20


def _environment(_store: object) -> list[tuple[str, str]]:
    return list(host.current().env)


def _arguments(_store: object) -> list[str]:
    return []


def _none(*_args: object) -> None:
    return None


def _exit(_store: object, status: object) -> None:
    state = host.current()
    ok = isinstance(status, wasmtime.component.Variant) and status.tag == "ok"
    raise state.abort(GuestFailure("exit", f"guest exited with {'success' if ok else 'failure'}"))


def _stdin(_store: object) -> capi.HostHandle:
    return host.current().new(host.InputStream(b""), host.INPUT_STREAM)


def _log_stream(_store: object) -> capi.HostHandle:
    state = host.current()
    return state.new(host.OutputStream(log=state.log), host.OUTPUT_STREAM)


def _random_bytes(_store: object, length: int) -> bytes:
    if length > MAX_RANDOM:
        state = host.current()
        raise state.abort(GuestFailure("trap", f"asked for {length} random bytes"))
    return os.urandom(length)


def _random_u64(_store: object) -> int:
    return int.from_bytes(os.urandom(8), "little")


def _insecure_seed(_store: object) -> tuple[int, int]:
    return _random_u64(_store), _random_u64(_store)


def _monotonic_now(_store: object) -> int:
    return time.monotonic_ns()


def _resolution_ns(_store: object) -> int:
    return 1


def _clock_subscribe(_store: object, _when: int) -> capi.HostHandle:
    return host.current().new(host.Plain(), host.POLLABLE)


def _datetime(nanoseconds: int) -> Record:
    value = Record()
    value.seconds, value.nanoseconds = divmod(nanoseconds, 1_000_000_000)  # type: ignore[attr-defined]
    return value


def _wall_now(_store: object) -> Record:
    return _datetime(time.time_ns())


def _wall_resolution(_store: object) -> Record:
    return _datetime(1)


def _preopens(_store: object) -> list[object]:
    return []


def _network(_store: object) -> capi.HostHandle:
    return host.current().new(host.Plain(), host.NETWORK)


def _denied_socket(*_args: object) -> str:
    return "access-denied"


def _denied_http(store: object, request: int, options: int | None) -> object:
    state = host.current()
    state.take(store, request)
    if options is not None:
        state.take(store, options)
    return wasmtime.component.Variant("HTTP-request-denied")


def _outgoing_request_new(store: object, headers: int) -> capi.HostHandle:
    state = host.current()
    fields: host.Fields = state.take(store, headers) or host.Fields()
    fields.immutable = True
    return state.new(host.OutgoingRequest(fields), host.OUTGOING_REQUEST)


def _getter(attr: str) -> typing.Callable[[object, int], object]:
    def get(store: object, this: int) -> object:
        return getattr(host.current().get(store, this), attr)
    return get


def _setter(attr: str) -> typing.Callable[[object, int, object], object]:
    def set_(store: object, this: int, value: object) -> object:
        setattr(host.current().get(store, this), attr, value)
        return wasmtime.component.Variant("ok")
    return set_


def _outgoing_request_headers(store: object, this: int) -> capi.HostHandle:
    state = host.current()
    request: host.OutgoingRequest = state.get(store, this)
    return state.new(request.headers, host.FIELDS)


def _outgoing_request_body(store: object, this: int) -> capi.HostHandle:
    state = host.current()
    state.get(store, this)
    return state.new(host.ResponseBody(0), host.OUTGOING_BODY)  # writes to it fail: limit 0


def _options_new(_store: object) -> capi.HostHandle:
    return host.current().new(host.Plain(), host.REQUEST_OPTIONS)


def _options_get(store: object, this: int) -> None:
    host.current().get(store, this)


def _options_set(store: object, this: int, _value: object) -> wasmtime.component.Variant:
    host.current().get(store, this)
    return wasmtime.component.Variant("ok")


_OPTION_NAMES = ("connect-timeout", "first-byte-timeout", "between-bytes-timeout")

#: Enough of ``outgoing-request`` and ``request-options`` that a guest can build a
#: request (to be refused by ``outgoing-handler.handle``).
OUTGOING: dict[str, typing.Callable[..., typing.Any]] = {
    "[constructor]outgoing-request": _outgoing_request_new,
    "[method]outgoing-request.body": _outgoing_request_body,
    "[method]outgoing-request.headers": _outgoing_request_headers,
    "[method]outgoing-request.method": _getter("method"),
    "[method]outgoing-request.set-method": _setter("method"),
    "[method]outgoing-request.path-with-query": _getter("path_with_query"),
    "[method]outgoing-request.set-path-with-query": _setter("path_with_query"),
    "[method]outgoing-request.scheme": _getter("scheme"),
    "[method]outgoing-request.set-scheme": _setter("scheme"),
    "[method]outgoing-request.authority": _getter("authority"),
    "[method]outgoing-request.set-authority": _setter("authority"),
    "[constructor]request-options": _options_new,
    **{f"[method]request-options.{n}": _options_get for n in _OPTION_NAMES},
    **{f"[method]request-options.set-{n}": _options_set for n in _OPTION_NAMES},
}

Interface = tuple[dict[str, int], dict[str, typing.Callable[..., typing.Any]]]

WORLD: dict[str, Interface] = {
    **host.IO,
    "wasi:http/types@0.2.0": (host.HTTP_RESOURCES, {**host.HTTP_TYPES, **OUTGOING}),
    "wasi:http/outgoing-handler@0.2.0": ({}, {"handle": _denied_http}),
    "wasi:cli/environment@0.2.0": ({}, {
        "get-environment": _environment, "get-arguments": _arguments, "initial-cwd": _none,
    }),
    "wasi:cli/exit@0.2.0": ({}, {"exit": _exit}),
    "wasi:cli/stdin@0.2.0": ({}, {"get-stdin": _stdin}),
    "wasi:cli/stdout@0.2.0": ({}, {"get-stdout": _log_stream}),
    "wasi:cli/stderr@0.2.0": ({}, {"get-stderr": _log_stream}),
    "wasi:cli/terminal-input@0.2.0": ({"terminal-input": host.TERMINAL_INPUT}, {}),
    "wasi:cli/terminal-output@0.2.0": ({"terminal-output": host.TERMINAL_OUTPUT}, {}),
    "wasi:cli/terminal-stdin@0.2.0": ({}, {"get-terminal-stdin": _none}),
    "wasi:cli/terminal-stdout@0.2.0": ({}, {"get-terminal-stdout": _none}),
    "wasi:cli/terminal-stderr@0.2.0": ({}, {"get-terminal-stderr": _none}),
    "wasi:random/random@0.2.0": ({}, {
        "get-random-bytes": _random_bytes, "get-random-u64": _random_u64,
    }),
    "wasi:random/insecure@0.2.0": ({}, {
        "get-insecure-random-bytes": _random_bytes, "get-insecure-random-u64": _random_u64,
    }),
    "wasi:random/insecure-seed@0.2.0": ({}, {"insecure-seed": _insecure_seed}),
    "wasi:clocks/monotonic-clock@0.2.0": ({}, {
        "now": _monotonic_now, "resolution": _resolution_ns,
        "subscribe-instant": _clock_subscribe, "subscribe-duration": _clock_subscribe,
    }),
    "wasi:clocks/wall-clock@0.2.0": ({}, {"now": _wall_now, "resolution": _wall_resolution}),
    "wasi:filesystem/preopens@0.2.0": ({}, {"get-directories": _preopens}),
    "wasi:sockets/network@0.2.0": ({"network": host.NETWORK}, {}),
    "wasi:sockets/instance-network@0.2.0": ({}, {"instance-network": _network}),
    "wasi:sockets/tcp-create-socket@0.2.0": ({}, {"create-tcp-socket": _denied_socket}),
    "wasi:sockets/udp-create-socket@0.2.0": ({}, {"create-udp-socket": _denied_socket}),
    "wasi:sockets/ip-name-lookup@0.2.0": ({}, {"resolve-addresses": _denied_socket}),
}


def _unversioned(name: str) -> str:
    """``wasi:io/streams@0.2.3`` -> ``wasi:io/streams@0.2``: the semver-compatible key."""
    interface, _, version = name.partition("@")
    return f"{interface}@{'.'.join(version.split('.')[:2])}"


def build_linker(engine: wasmtime.Engine, component: Component) -> Linker:
    """A linker with the proxy world for ``component``; its other imports trap when called.

    Raises ``wasmtime.WasmtimeError`` when an import cannot be satisfied at all.
    """
    linker = Linker(engine)
    wanted = {_unversioned(name): name for name in component.type.imports(engine)}
    with linker.root() as root:
        for key, (resources, functions) in WORLD.items():
            name = wanted.get(_unversioned(key))
            if name is None:
                continue
            with root.add_instance(name) as instance:
                for resource, kind in resources.items():
                    instance.add_resource(resource, ResourceType.host(kind), host.drop_resource)
                for function, implementation in functions.items():
                    capi.add_component_func(instance, function, implementation)
    linker.define_unknown_imports_as_traps(component)
    return linker
