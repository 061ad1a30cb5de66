"""The data plane's auth and path handling in process (docs/http.md): what a client
cannot see from outside, such as whether the body was read before a refusal."""

from __future__ import annotations

import asyncio
from typing import Any

from edge_api.models import EdgeRouteSpec
from edge_runner.abi.envelope import decode_request
from edge_runner.http.dataplane import DataPlane
from edge_runner.invoke.catalog import DesiredState
from edge_runner.wasm.engine import WasmEngine
from support import guests
from support.inprocess import AsgiResult, RecordingExecutor, asgi_call, metric, new_catalog, source
from support.tokens import AUDIENCE, ISSUER, Issuer

ISSUED = Issuer()
HOST = (b"host", b"edge.test")
SECRETS = {"keys": {"ops": b"the-key"}, "idp": {"jwks": ISSUED.jwks()}}
ROUTE = EdgeRouteSpec.model_validate({
    "auth": {"apiKey": {"query": "key", "secretRef": {"name": "keys"}}},
    "rules": [
        {"match": {"path": "/keyed"}, "function": "echo"},
        {"match": {"path": "/jwt"}, "function": "echo", "auth": {"jwt": {
            "issuer": ISSUER, "audiences": [AUDIENCE],
            "jwksSecretRef": {"name": "idp", "key": "jwks"}}}},
        {"match": {"path": "/open"}, "function": "echo", "auth": {"anonymous": True}}]})


def _calls(engine: WasmEngine, executor: RecordingExecutor,
           requests: list[dict[str, Any]]) -> tuple[list[AsgiResult], Any]:
    async def scenario() -> tuple[list[AsgiResult], Any]:
        catalog = new_catalog(engine, executor)
        await catalog.apply(DesiredState([source("echo", guests.echo_wat())], [("r", ROUTE)],
                                         secrets=SECRETS))
        app = DataPlane(catalog, catalog.metrics)
        try:
            return [await asgi_call(app, **request) for request in requests], catalog
        finally:
            for runtime in catalog.snapshot.functions.values():
                runtime.close()

    return asyncio.run(scenario())


def test_a_refused_request_is_answered_before_its_body_is_read(
        engine: WasmEngine, executor: RecordingExecutor) -> None:
    (refused,), catalog = _calls(engine, executor, [
        {"path": "/keyed", "method": "POST", "chunks": [b"body"], "refuse_receive": True}])
    assert refused.status == 401 and refused.received == 0
    assert refused.problem()["type"].endswith("/unauthenticated")
    assert executor.submitted == 0
    assert metric(catalog, "edge_auth_decisions_total", route="r",
                  result="unauthenticated") == 1


def test_the_guest_gets_identity_and_normalized_path_not_credentials(
        engine: WasmEngine, executor: RecordingExecutor) -> None:
    token = ISSUED.token("ES256")
    keyed, jwt, opened = _calls(engine, executor, [
        {"path": "/keyed", "raw_path": b"/open/../keyed", "query": b"key=the-key&x=1",
         "headers": [HOST, (b"x-edge-auth-subject", b"root")]},
        {"path": "/jwt", "headers": [HOST, (b"authorization", f"Bearer {token}".encode())]},
        {"path": "/open", "headers": [HOST, (b"x-edge-auth-method", b"forged"),
                                      (b"authorization", b"Bearer anything")]},
    ])[0]
    _, path, query, _, headers, _ = decode_request(keyed.body)
    assert (path, query) == (b"/keyed", b"x=1")
    assert (b"x-edge-auth-key", b"ops") in headers
    assert (b"x-edge-auth-subject", b"root") not in headers
    _, _, _, _, headers, _ = decode_request(jwt.body)
    assert (b"x-edge-auth-subject", b"alice") in headers
    assert not any(name == b"authorization" for name, _ in headers)
    _, _, _, _, headers, _ = decode_request(opened.body)
    assert not any(name.startswith(b"x-edge-auth-") for name, _ in headers)
    assert (b"authorization", b"Bearer anything") in headers  # an open rule passes it on
