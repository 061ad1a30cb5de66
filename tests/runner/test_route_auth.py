"""Protected routes (docs/http.md) on a real runner process, standalone folder.

API keys and JWTs from Secret manifests in the folder; tokens minted by PyJWT
(support.tokens) with real RS256/ES256 keys, verified by the runner's joserfc.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.guests import echo_wat, env_probe_wat, write_function
from support.runner import RunnerProcess, metric_value, wait_until
from support.tokens import AUDIENCE, ISSUER, Issuer, flip_signature_byte

KEY = "k3y-for-tests-0123456789"


def _secret(name: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}


def _write(folder: Path, name: str, documents: list[dict[str, Any]]) -> None:
    target = folder / f"{name}.yaml"
    target.with_suffix(".tmp").write_text(yaml.safe_dump_all(documents))
    target.with_suffix(".tmp").rename(target)


def _route(name: str, auth: dict[str, Any], rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeRoute",
            "metadata": {"name": name}, "spec": {"auth": auth, "rules": rules}}


def _jwt_auth(**extra: Any) -> dict[str, Any]:
    return {"jwt": {"issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": ["RS256", "ES256"],
                    "jwksSecretRef": {"name": "idp", "key": "jwks.json"},
                    "claimsToHeaders": [{"claim": "scope", "header": "x-edge-auth-scope"}]},
            **extra}


@pytest.fixture
def issuer() -> Issuer:
    return Issuer()


def test_api_key_route(manifest_dir: Path) -> None:
    write_function(manifest_dir, "echo", echo_wat(), route=False)
    _write(manifest_dir, "keys", [
        _secret("hello-keys", {"team-a": KEY.encode() + b"\n", "team-b": b"other-key"}),
        _route("keyed", {"apiKey": {"secretRef": {"name": "hello-keys"}}},
               [{"match": {"path": "/keyed"}, "function": "echo"},
                {"match": {"path": "/keyed/public"}, "function": "echo",
                 "auth": {"anonymous": True}}])])
    with RunnerProcess(manifest_dir) as runner:
        missing = runner.client.get("/keyed")
        assert missing.status_code == 401
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.headers["www-authenticate"] == 'ApiKey header="x-api-key"'
        assert runner.client.get("/keyed", headers={"x-api-key": "wrong"}).status_code == 401
        good = runner.client.get("/keyed", headers={"x-api-key": KEY,
                                                     "x-edge-auth-method": "forged",
                                                     "x-edge-auth-subject": "root"})
        assert good.status_code == 200
        assert b"team-a" in good.content  # x-edge-auth-key names the Secret data key
        assert b"root" not in good.content and b"forged" not in good.content
        assert KEY.encode() not in good.content  # credentials not forwarded
        assert runner.client.get("/keyed/public").status_code == 200
        metrics = runner.metrics()
        assert metric_value(metrics, "edge_auth_decisions_total",
                            {"route": "keyed", "result": "unauthenticated"}) == 2
        assert metric_value(metrics, "edge_auth_decisions_total",
                            {"route": "keyed", "result": "allowed"}) == 1
        assert KEY not in metrics and KEY not in runner.log()
        assert KEY not in runner.admin.get("/v1/functions").text
        # Rotating the Secret takes effect without a restart.
        _write(manifest_dir, "keys", [
            _secret("hello-keys", {"team-a": b"rotated"}),
            _route("keyed", {"apiKey": {"secretRef": {"name": "hello-keys"}}},
                   [{"match": {"path": "/keyed"}, "function": "echo"}])])
        wait_until(lambda: runner.client.get("/keyed", headers={"x-api-key": "rotated"}
                                             ).status_code == 200, what="rotated key")
        assert runner.client.get("/keyed", headers={"x-api-key": KEY}).status_code == 401


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_jwt_route(manifest_dir: Path, issuer: Issuer) -> None:
    write_function(manifest_dir, "echo", echo_wat(), route=False)
    _write(manifest_dir, "jwt", [
        _secret("idp", {"jwks.json": issuer.jwks()}),
        _route("secure", _jwt_auth(require={"claims": {"scope": ["read"]}}),
               [{"match": {"path": "/secure"}, "function": "echo"}])])
    with RunnerProcess(manifest_dir) as runner:
        def status(token: str) -> int:
            return runner.client.get("/secure", headers=_bearer(token)).status_code

        for alg in ("RS256", "ES256"):
            response = runner.client.get("/secure", headers=_bearer(issuer.token(alg)))
            assert response.status_code == 200, response.text
            assert b"alice" in response.content and b"read write" in response.content
            assert b"authorization" not in response.content.lower()
        refused = {
            "expired": issuer.token(exp=1_000_000_000, iat=999_999_000),
            "not yet valid": issuer.token(nbf=2_000_000_000),
            "wrong issuer": issuer.token(iss="https://evil.example.test"),
            "wrong audience": issuer.token(aud="other"),
            "alg none": issuer.unsigned_token(),
            "HS256 with the public key": issuer.hs256_with_public_key(),
            "unknown kid": issuer.token(kid="rotated-away"),
            "flipped signature byte": flip_signature_byte(issuer.token()),
            "other issuer's key": Issuer().token(),
        }
        for what, token in refused.items():
            response = runner.client.get("/secure", headers=_bearer(token))
            assert response.status_code == 401, what
            assert response.headers["www-authenticate"].startswith('Bearer realm="secure"'), what
            assert 'error="invalid_token"' in response.headers["www-authenticate"], what
        no_token = runner.client.get("/secure")
        assert no_token.status_code == 401 and "error=" not in no_token.headers["www-authenticate"]
        forbidden = runner.client.get("/secure", headers=_bearer(issuer.token(scope="write")))
        assert forbidden.status_code == 403
        assert forbidden.json()["type"].endswith("/forbidden")
        assert 'error="insufficient_scope"' in forbidden.headers["www-authenticate"]
        assert status(issuer.token()) == 200
        assert metric_value(runner.metrics(), "edge_auth_decisions_total",
                            {"route": "secure", "result": "forbidden"}) == 1


def test_secret_env_and_missing_secret(manifest_dir: Path) -> None:
    write_function(manifest_dir, "probe", env_probe_wat())
    manifest = yaml.safe_load_all((manifest_dir / "probe.yaml").read_text())
    function, route = list(manifest)
    function["spec"]["env"] = [{"name": "TOKEN", "valueFrom": {
        "secretKeyRef": {"name": "app", "key": "token"}}}]
    _write(manifest_dir, "probe", [function, route])
    with RunnerProcess(manifest_dir) as runner:
        wait_until(lambda: "SecretNotFound" in str(runner.functions()["probe"].get("error")),
                   what="SecretNotFound reported")
        assert runner.client.get("/probe").status_code == 503
        _write(manifest_dir, "app", [_secret("app", {"token": b"s3cr3t-v1"})])
        wait_until(lambda: b"TOKEN=s3cr3t-v1" in runner.client.get("/probe").content,
                   what="secret env served")
        _write(manifest_dir, "app", [_secret("app", {"token": b"s3cr3t-v2"})])
        wait_until(lambda: b"TOKEN=s3cr3t-v2" in runner.client.get("/probe").content,
                   what="secret env updated without restart")
        assert "s3cr3t" not in runner.admin.get("/v1/functions").text
        assert "s3cr3t" not in runner.log()
