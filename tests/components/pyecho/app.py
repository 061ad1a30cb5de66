"""A wasi:http/proxy guest for componentize-py (tests/support/components.py builds it).

Routes by the last segment of the path, so any route prefix works:
GET /...?q  -> 200 text: method, path with query, x-probe header and the value of
              the GREETING environment variable, one per line
POST        -> 200, the request body echoed, content-type kept
/outgoing   -> tries an outgoing HTTP request; answers what the host said
/file       -> tries to open a file; answers what happened
/env        -> the whole environment, one NAME=value a line
/none       -> returns without setting a response
/spin       -> loops forever
/hog        -> allocates until memory runs out
"""

import os

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports import outgoing_handler
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method_Get,
    Method_Post,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    ResponseOutparam,
    Scheme_Https,
)

CHUNK = 65536


def _read_body(request: IncomingRequest) -> bytes:
    body = request.consume()
    stream = body.stream()
    chunks = []
    while True:
        try:
            chunks.append(stream.blocking_read(CHUNK))
        except Exception:  # stream-error.closed: the end
            break
    stream.__exit__(None, None, None)
    body.__exit__(None, None, None)
    return b"".join(chunks)


def _respond(out: ResponseOutparam, status: int, body: bytes,
             headers: list[tuple[str, bytes]] | None = None) -> None:
    response = OutgoingResponse(Fields.from_list(headers or [("content-type", b"text/plain")]))
    response.set_status_code(status)
    outgoing = response.body()
    ResponseOutparam.set(out, Ok(response))
    stream = outgoing.write()
    for start in range(0, len(body), 4096):
        stream.blocking_write_and_flush(body[start:start + 4096])
    stream.__exit__(None, None, None)
    OutgoingBody.finish(outgoing, None)


def _outgoing() -> bytes:
    request = OutgoingRequest(Fields())
    request.set_scheme(Scheme_Https())
    request.set_authority("example.com")
    request.set_path_with_query("/")
    try:
        outgoing_handler.handle(request, None)
    except Exception as exc:  # Err(error-code)
        return f"refused: {type(exc.value).__name__}".encode()
    return b"sent"


def _file() -> bytes:
    try:
        with open("/etc/passwd", "rb") as handle:
            return b"read " + str(len(handle.read())).encode()
    except OSError as exc:
        return f"refused: {type(exc).__name__}".encode()


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        route = "/" + path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        if route == "/none":
            return
        if route == "/spin":
            while True:
                pass
        if route == "/hog":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        if route == "/outgoing":
            _respond(response_out, 200, _outgoing())
            return
        if route == "/file":
            _respond(response_out, 200, _file())
            return
        if route == "/env":
            text = "".join(f"{k}={v}\n" for k, v in sorted(os.environ.items()))
            _respond(response_out, 200, text.encode())
            return
        method = request.method()
        if isinstance(method, Method_Post):
            content_type = request.headers().get("content-type") or [b"application/octet-stream"]
            _respond(response_out, 200, _read_body(request), [("content-type", content_type[0])])
            return
        probe = request.headers().get("x-probe")
        lines = [
            "GET" if isinstance(method, Method_Get) else type(method).__name__,
            path,
            probe[0].decode() if probe else "",
            os.environ.get("GREETING", ""),
        ]
        _respond(response_out, 200, ("\n".join(lines) + "\n").encode(),
                 [("content-type", b"text/plain"), ("x-guest", b"componentize-py")])
