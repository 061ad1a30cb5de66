"""Cost of route auth: req/s of an open route next to API-key and JWT routes, one run.

One ``edge-runner serve`` with the ``constant`` function (built from source)
behind three routes: ``/open`` (no auth), ``/key`` (an API key from a Secret
manifest) and ``/jwt`` (an RS256 token minted by PyJWT, verified by the
runner's joserfc against a JWKS Secret, then served from the verified-token
cache).  wrk drives each in turn (the load generator of bench/throughput.py);
then the decision itself is timed in process, cached and uncached.  Not a
test.

    python bench/auth.py [--duration 5] [--connections 16]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

from throughput import wrk  # noqa: E402  (bench/ on sys.path)

from edge_api.models import RouteAuth  # noqa: E402
from edge_runner.http.auth import RoutePolicy  # noqa: E402
from support.runner import RunnerProcess  # noqa: E402
from support.tokens import AUDIENCE, ISSUER, Issuer  # noqa: E402
from support.wasm import build_function  # noqa: E402

KEY = "bench-key-0123456789abcdef"


def _route(name: str, auth: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"rules": [{"match": {"path": f"/{name}", "pathType": "Exact"},
                                       "function": "constant"}]}
    if auth is not None:
        spec["auth"] = auth
    return {"apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeRoute",
            "metadata": {"name": name}, "spec": spec}


def _jwt_auth() -> dict[str, Any]:
    return {"jwt": {"issuer": ISSUER, "audiences": [AUDIENCE],
                    "jwksSecretRef": {"name": "idp", "key": "jwks.json"}}}


def _decision_cost(issuer: Issuer, token: str) -> tuple[float, float]:
    """Microseconds per decision: a cached token, and a token verified from scratch."""
    secrets = {"idp": {"jwks.json": issuer.jwks()}}
    policy = RoutePolicy("jwt", RouteAuth.model_validate(_jwt_auth()), secrets)
    headers = [(b"host", b"x"), (b"authorization", f"Bearer {token}".encode())]
    now = time.time()
    cached = min(timeit.repeat(lambda: policy.decide(headers, b"", now), number=20000,
                               repeat=3)) / 20000
    fresh_tokens = [[(b"authorization", f"Bearer {issuer.token(jti=str(n))}".encode())]
                    for n in range(300)]  # each verified once: no cache hit
    started = time.perf_counter()
    for fresh_headers in fresh_tokens:
        policy.decide(fresh_headers, b"", now)
    fresh = (time.perf_counter() - started) / len(fresh_tokens)
    return cached * 1e6, fresh * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 2
    module = build_function("constant")
    issuer = Issuer()
    token = issuer.token(exp=int(time.time()) + 3600)
    cases = {"open": (), "api key": (f"x-api-key: {KEY}",),
             "jwt": (f"authorization: Bearer {token}",)}
    paths = {"open": "/open", "api key": "/key", "jwt": "/jwt"}
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copytree(module.parent / "manifests", folder / "manifests")
        shutil.copy(module, folder / module.name)
        (folder / "auth.yaml").write_text(yaml.safe_dump_all([
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"},
             "stringData": {"bench": KEY}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "idp"},
             "stringData": {"jwks.json": issuer.jwks().decode()}},
            _route("open", None),
            _route("key", {"apiKey": {"secretRef": {"name": "keys"}}}),
            _route("jwt", _jwt_auth())]))
        with RunnerProcess(folder, extra_args=["--log-level", "warning"]) as runner:
            for name, headers in cases.items():
                url = f"{runner.url}{paths[name]}"
                response = runner.client.get(paths[name], headers=dict(
                    h.split(": ", 1) for h in headers))
                assert response.status_code == 200, (name, response.text)
                wrk(url, 1, args.connections, headers)  # warm-up
                results[name] = wrk(url, args.duration, args.connections, headers)
    cached_us, fresh_us = _decision_cost(issuer, token)
    print(f"wrk -t1 -c{args.connections} -d{args.duration}s on loopback, {os.cpu_count()} cores"
          " (one runner, the same run)")
    print(f"{'route':<10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}")
    for name, r in results.items():
        print(f"{name:<10}{r['rps']:>10.0f}{r['p50'] * 1e3:>10.2f}{r['p99'] * 1e3:>10.2f}"
              f"{r['errors']:>10.0f}")
    base = results["open"]["rps"]
    for name in ("api key", "jwt"):
        print(f"{name}: {results[name]['rps'] / base:.2f}x the open route's req/s")
    print(f"JWT decision in process: {cached_us:.1f} us with the token cached,"
          f" {fresh_us:.1f} us verified from scratch (RS256)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
