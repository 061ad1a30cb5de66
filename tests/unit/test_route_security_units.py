"""Pure parts of route security: path normalization, JWT checks, auth decisions,
Secret resolution, the hand-off check (docs/http.md, docs/resources.md)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_api.handoff import handoff_digest
from edge_api.models import EdgeFunctionSpec, EdgeRouteSpec, RouteAuth
from edge_api.wire import parse_configmap, route_configmap
from edge_runner.abi.wagi import cgi_environment
from edge_runner.http.auth import Allowed, AuthTable, Denied, RoutePolicy
from edge_runner.http.jwtcheck import JwksError, JwtVerifier, TokenRejected, load_jwks
from edge_runner.http.paths import PathRejected, normalize
from edge_runner.sources.handoff import Handoff
from edge_runner.sources.secrets import SecretNotFound, decode_secret, resolve_env
from support.inprocess import http_request
from support.tokens import AUDIENCE, ISSUER, Issuer, flip_signature_byte

ISSUED = Issuer()


# -- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "path", "raw_out"), [
    (b"/a/b", "/a/b", b"/a/b"),
    (b"/a/../b", "/b", b"/b"),
    (b"/a/./b/.", "/a/b/", b"/a/b/"),
    (b"/a//b///c", "/a/b/c", b"/a/b/c"),
    (b"/%7Euser/%2e%2e/x", "/x", b"/x"),
    (b"/caf%c3%a9", "/café", b"/caf%C3%A9"),
    (b"/a%20b", "/a b", b"/a%20b"),
    (b"/a/..", "/", b"/"),
])
def test_normalize(raw: bytes, path: str, raw_out: bytes) -> None:
    assert normalize(raw) == (path, raw_out)


@pytest.mark.parametrize("raw", [b"/..", b"/a/../..", b"/a%2Fb", b"/a%2fb", b"/a%5cb", b"x"])
def test_normalize_refuses(raw: bytes) -> None:
    with pytest.raises(PathRejected):
        normalize(raw)


@given(st.lists(st.sampled_from(["a", "b", ".", "..", "", "%2E", "%41"]), max_size=8))
def test_normalized_paths_have_no_dot_segments_and_are_stable(segments: list[str]) -> None:
    try:
        _, raw = normalize(("/" + "/".join(segments)).encode())
    except PathRejected:
        return
    parts = raw.split(b"/")[1:]
    assert b"." not in parts and b".." not in parts and b"//" not in raw
    assert normalize(raw)[1] == raw


# -- JWT -----------------------------------------------------------------------------------------


def _verifier(**changes: Any) -> JwtVerifier:
    options: dict[str, Any] = {"keys": load_jwks(ISSUED.jwks()), "issuer": ISSUER,
                               "audiences": [AUDIENCE], "algorithms": ["RS256", "ES256"]}
    options.update(changes)
    return JwtVerifier(**options)


# Tokens are minted when the test runs, not at collection: a suite that runs longer than a
# token's margin would otherwise see "not yet valid" become valid.
BAD_TOKENS: dict[str, Callable[[], str]] = {
    "expired": lambda: ISSUED.token(exp=int(time.time()) - 120),
    "not yet valid": lambda: ISSUED.token(nbf=int(time.time()) + 120),
    "issuer": lambda: ISSUED.token(iss="https://other.test"),
    "audience": lambda: ISSUED.token(aud="other"),
    "no exp": lambda: ISSUED.token(exp=None),
    "alg none": ISSUED.unsigned_token,
    "HS256 with the public key": ISSUED.hs256_with_public_key,
    "unknown kid": lambda: ISSUED.token(kid="nope"),
    "flipped byte": lambda: flip_signature_byte(ISSUED.token("ES256")),
}


@pytest.mark.parametrize("what", list(BAD_TOKENS))
def test_bad_tokens_are_refused(what: str) -> None:
    token = BAD_TOKENS[what]()
    with pytest.raises(TokenRejected):
        _verifier().verify(token, time.time())


def test_clock_skew_and_the_cache_until_expiry() -> None:
    now = time.time()
    verifier = _verifier()
    token = ISSUED.token(exp=int(now) + 10)
    assert verifier.verify(token, now)["sub"] == "alice"
    assert verifier.verify(token, now + 10 + 29)["sub"] == "alice"  # within the skew, cached
    with pytest.raises(TokenRejected):
        verifier.verify(token, now + 10 + 31)
    with pytest.raises(TokenRejected):  # an algorithm the route does not allow
        _verifier(algorithms=["ES256"]).verify(ISSUED.token("RS256"), now)


def test_jwks_with_private_or_symmetric_keys_is_refused() -> None:
    with pytest.raises(JwksError):
        load_jwks(b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')
    with pytest.raises(JwksError):
        load_jwks(b"not json")


# -- decisions -----------------------------------------------------------------------------------


def _policy(auth: dict[str, Any], secrets: dict[str, dict[str, bytes]]) -> RoutePolicy:
    return RoutePolicy("r", RouteAuth.model_validate(auth), secrets)


JWT = {"jwt": {"issuer": ISSUER, "audiences": [AUDIENCE],
               "jwksSecretRef": {"name": "idp", "key": "jwks"},
               "claimsToHeaders": [{"claim": "email", "header": "x-edge-auth-email"}]}}
SECRETS = {"idp": {"jwks": ISSUED.jwks()}, "keys": {"one": b"k1\n", "two": b"k2"}}


def test_api_key_decisions() -> None:
    policy = _policy({"apiKey": {"query": "key", "secretRef": {"name": "keys"}}}, SECRETS)
    allowed = policy.decide([], b"a=1&key=k2", 0)
    assert isinstance(allowed, Allowed)
    assert (b"x-edge-auth-key", b"two") in allowed.identity and allowed.query == b"a=1"
    assert isinstance(policy.decide([], b"key=k1", 0), Allowed)  # trailing newline stripped
    denied = policy.decide([], b"key=k3", 0)
    assert isinstance(denied, Denied) and denied.status == 401
    missing = _policy({"apiKey": {"secretRef": {"name": "absent"}}}, SECRETS)
    assert isinstance(missing.decide([(b"x-api-key", b"")], b"", 0), Denied)  # fails closed


def test_jwt_decisions_identity_and_stripping() -> None:
    policy = _policy({**JWT, "require": {"claims": {"scope": ["read"]}}}, SECRETS)
    bearer = [(b"authorization", b"Bearer " + ISSUED.token(email="a@x.test\r\nx: y").encode())]
    allowed = policy.decide(bearer, b"", time.time())
    assert isinstance(allowed, Allowed)
    assert allowed.strip == frozenset({b"authorization"})
    assert (b"x-edge-auth-subject", b"alice") in allowed.identity
    assert (b"x-edge-auth-email", b"a@x.test??x: y") in allowed.identity  # no CR/LF
    scoped = [(b"authorization", b"Bearer " + ISSUED.token(scope="write").encode())]
    forbidden = policy.decide(scoped, b"", time.time())
    assert isinstance(forbidden, Denied) and forbidden.status == 403
    forwarded = _policy({**JWT, "forwardCredentials": True}, SECRETS).decide(bearer, b"",
                                                                            time.time())
    assert isinstance(forwarded, Allowed) and forwarded.strip == frozenset()


def test_rule_auth_replaces_the_route_auth() -> None:
    spec = EdgeRouteSpec.model_validate({
        "auth": {"apiKey": {"secretRef": {"name": "keys"}}},
        "rules": [{"match": {"path": "/a"}, "function": "f"},
                  {"match": {"path": "/p"}, "function": "f", "auth": {"anonymous": True}},
                  {"match": {"path": "/j"}, "function": "f", "auth": JWT}]})
    table = AuthTable([("r", spec)], SECRETS, {})
    assert table.policy("r", 0) is not None and table.policy("r", 1) is None
    third = table.policy("r", 2)
    assert third is not None and third.jwt is not None and not third.keys
    assert spec.secret_names() == ["keys", "idp"]


@pytest.mark.parametrize("auth", [
    {}, {"anonymous": True, "apiKey": {"secretRef": {"name": "k"}}},
    {"apiKey": {"secretRef": {"name": "k"}}, "require": {"claims": {"scope": ["x"]}}},
    {"jwt": {**JWT["jwt"], "algorithms": ["HS256"]}},
    {"jwt": {**JWT["jwt"], "algorithms": ["none"]}},
])
def test_auth_specs_the_models_refuse(auth: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RouteAuth.model_validate(auth)


def test_wagi_guests_get_the_authorization_the_data_plane_lets_through() -> None:
    request = http_request("/x", headers=[(b"authorization", b"Bearer t")])
    assert ("HTTP_AUTHORIZATION", "Bearer t") in cgi_environment(request)


# -- Secrets and the hand-off --------------------------------------------------------------------


def test_secret_env_resolution() -> None:
    spec = EdgeFunctionSpec.model_validate({"source": {"path": "x.wasm"}, "env": [
        {"name": "A", "value": "1"},
        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "b"}}}]})
    resolved = resolve_env(spec, {"s": {"b": b"two"}})
    assert [(e.name, e.value) for e in resolved.env] == [("A", "1"), ("B", "two")]
    with pytest.raises(SecretNotFound, match="Secret s has no key b"):
        resolve_env(spec, {"s": {}})
    with pytest.raises(SecretNotFound, match="Secret s not found"):
        resolve_env(spec, {"s": None})
    assert decode_secret({"data": {"a": base64.b64encode(b"x").decode()},
                          "stringData": {"b": "y"}}) == {"a": b"x", "b": b"y"}


def test_handoff_serves_only_what_the_status_confirms() -> None:
    spec = EdgeRouteSpec.model_validate({"rules": [{"match": {"path": "/a"}, "function": "f"}]})
    genuine = route_configmap(name="r", namespace="ns", spec=spec)
    genuine["metadata"]["resourceVersion"] = "1"
    handoff = Handoff()
    handoff.owner_event("EdgeRoute", "ADDED", {"metadata": {"name": "r"},
                                               "status": {"handoff": handoff_digest(genuine)}})
    parsed = parse_configmap(genuine)
    assert handoff.check("edgeroute-r", genuine, parsed) == (parsed, None)
    forged = {**genuine, "metadata": {**genuine["metadata"], "resourceVersion": "2"},
              "data": {**genuine["data"], "route.json": genuine["data"]["route.json"].replace(
                  "/a", "/b")}}
    kept, error = handoff.check("edgeroute-r", forged, parse_configmap(forged))
    assert kept is parsed and error is not None and "status.handoff" in error
    assert handoff.rejected == 1
    fresh = Handoff()
    assert fresh.check("edgeroute-r", forged, parse_configmap(forged))[0] is None
    replayed, error = fresh.check("edgeroute-copy", genuine, parsed)  # genuine, wrong name
    assert replayed is None and error is not None
