"""Route auth, Secret env and the trusted hand-off on the real API server.

Operator and runner run as the chart's ServiceAccounts (support.identities).
Secrets are real Secrets; tokens are minted by PyJWT (support.tokens) and
verified by the runner's joserfc.  The forger is a ServiceAccount bound to the
API server's own built-in ``edit`` ClusterRole: it may write ConfigMaps and
Secrets in the namespace but not the status of an EdgeFunction, so the
ConfigMap it writes must never be served (docs/resources.md, "Trusted hand-off").
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.fileserver import FileServer, Reply
from support.guests import constant_wat, echo_wat, env_probe_wat
from support.helm import Helm
from support.identities import ChartIdentities
from support.k8s import Cluster
from support.objects import condition, function_yaml, get
from support.operator import OperatorProcess
from support.runner import RunnerProcess, metric_value, wait_until
from support.tokens import AUDIENCE, ISSUER, Issuer
from support.wasm import wat_to_wasm

pytestmark = pytest.mark.k8s

#: Secret refresh (10 s) + reload, with slack.
SECRET_BOUND = 25


@pytest.fixture
def operator(namespace: str, identities: ChartIdentities) -> Iterator[OperatorProcess]:
    # The JWKS server of these tests listens on loopback, which the fetch policy refuses
    # unless allowed (docs/artifacts.md).
    with OperatorProcess(namespace, identities.operator_env(
            EDGE_OPERATOR_ALLOW_FETCH_FROM="127.0.0.0/8")) as started:
        yield started


@pytest.fixture
def runner(namespace: str, identities: ChartIdentities,
           operator: OperatorProcess) -> Iterator[RunnerProcess]:
    with RunnerProcess(None, extra_args=["--namespace", namespace],
                       env=identities.runner_env()) as started:
        yield started


def _apply(cluster: Cluster, namespace: str, *documents: dict[str, Any] | str) -> None:
    text = "\n---\n".join(d if isinstance(d, str) else json.dumps(d) for d in documents)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=text)


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "stringData": data}


def _route(name: str, path: str, function: str, auth: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeRoute",
            "metadata": {"name": name},
            "spec": {"auth": auth, "rules": [{"match": {"path": path}, "function": function}]}}


def test_api_key_and_jwt_routes_from_secrets(cluster: Cluster, namespace: str,
                                             runner: RunnerProcess) -> None:
    issuer = Issuer()
    _apply(cluster, namespace,
           _secret("keys", {"client-1": "first-key"}),
           _secret("idp", {"jwks.json": issuer.jwks().decode()}),
           function_yaml("echo", wat_to_wasm(echo_wat())),
           _route("keyed", "/keyed", "echo", {"apiKey": {"secretRef": {"name": "keys"}}}),
           _route("bearer", "/bearer", "echo", {"jwt": {
               "issuer": ISSUER, "audiences": [AUDIENCE],
               "jwksSecretRef": {"name": "idp", "key": "jwks.json"}},
               "require": {"claims": {"scope": ["read"]}}}))
    wait_until(lambda: runner.client.get("/keyed", headers={"x-api-key": "first-key"}
                                         ).status_code == 200, timeout=30, what="keyed route")
    # Each route is served once its own ConfigMap is confirmed (status.handoff): wait for both.
    wait_until(lambda: runner.client.get("/bearer").status_code == 401, timeout=30,
               what="bearer route")
    assert runner.client.get("/keyed").status_code == 401
    assert runner.client.get("/keyed", headers={"x-api-key": "nope"}).status_code == 401
    good = runner.client.get("/bearer",
                             headers={"authorization": f"Bearer {issuer.token('ES256')}"})
    assert good.status_code == 200 and b"alice" in good.content
    assert runner.client.get("/bearer", headers={
        "authorization": f"Bearer {issuer.token(scope='write')}"}).status_code == 403
    assert runner.client.get("/bearer", headers={
        "authorization": f"Bearer {issuer.token(aud='other')}"}).status_code == 401
    # Rotation: a new key value in the Secret works within the refresh period.
    _apply(cluster, namespace, _secret("keys", {"client-1": "second-key"}))
    wait_until(lambda: runner.client.get("/keyed", headers={"x-api-key": "second-key"}
                                         ).status_code == 200,
               timeout=SECRET_BOUND, what="rotated key")
    assert runner.client.get("/keyed", headers={"x-api-key": "first-key"}).status_code == 401
    for where in (runner.metrics(), runner.log(), runner.admin.get("/v1/functions").text,
                  json.dumps(get(cluster, namespace, "configmap", "edgeroute-keyed"))):
        assert "first-key" not in where and "second-key" not in where
    assert metric_value(runner.metrics(), "edge_auth_decisions_total",
                        {"route": "bearer", "result": "forbidden"}) == 1


def test_secret_env_reaches_the_guest_and_follows_the_secret(
        cluster: Cluster, namespace: str, runner: RunnerProcess) -> None:
    env = "  env: [{name: TOKEN, valueFrom: {secretKeyRef: {name: app, key: token}}}]\n"
    _apply(cluster, namespace, _secret("app", {"token": "value-one"}),
           function_yaml("probe", wat_to_wasm(env_probe_wat()), extra=env),
           _route("probe", "/probe", "probe", {"anonymous": True}))
    wait_until(lambda: b"TOKEN=value-one" in runner.client.get("/probe").content, timeout=30,
               what="secret env served")
    _apply(cluster, namespace, _secret("app", {"token": "value-two"}))
    wait_until(lambda: b"TOKEN=value-two" in runner.client.get("/probe").content,
               timeout=SECRET_BOUND, what="changed secret env served without a restart")
    published = json.dumps(get(cluster, namespace, "configmap", "edgefn-probe"))
    assert "value-" not in published and "value-" not in runner.log()
    assert "value-" not in json.dumps(get(cluster, namespace, "ef", "probe").get("status"))


def _forger_kubeconfig(cluster: Cluster, namespace: str, directory: Path) -> Path:
    """A ServiceAccount bound to the API server's built-in ``edit`` ClusterRole."""
    cluster.kubectl("create", "serviceaccount", "forger", "-n", namespace)
    cluster.kubectl("create", "rolebinding", "forger-edit", "--clusterrole=edit",
                    f"--serviceaccount={namespace}:forger", "-n", namespace)
    token = cluster.kubectl("create", "token", "forger", "-n", namespace).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    clusters = [c for c in admin["clusters"] if c["name"] == context["context"]["cluster"]]
    path = directory / "forger.kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": clusters,
        "users": [{"name": "forger", "user": {"token": token}}],
        "contexts": [{"name": "forger", "context": {"cluster": clusters[0]["name"],
                                                    "user": "forger"}}],
        "current-context": "forger"}))
    return path


def test_a_configmap_forged_with_the_edit_role_is_not_served(
        cluster: Cluster, namespace: str, operator: OperatorProcess, runner: RunnerProcess,
        tmp_path: Path) -> None:
    _apply(cluster, namespace, function_yaml("victim", wat_to_wasm(constant_wat(b"genuine"))),
           _route("victim", "/victim", "victim", {"anonymous": True}))
    wait_until(lambda: runner.client.get("/victim").text == "genuine", timeout=30,
               what="genuine module served")
    # The operator repairs a ConfigMap of its own someone edited at once (it watches
    # them): stopped, it shows that the runner alone refuses the forgery.
    operator.stop()
    forger = _forger_kubeconfig(cluster, namespace, tmp_path)

    def as_forger(*args: str, stdin: str | None = None, check: bool = True) -> Any:
        return cluster.kubectl("--kubeconfig", str(forger), *args, "-n", namespace,
                               input=stdin, check=check)

    genuine = get(cluster, namespace, "configmap", "edgefn-victim")
    forged = json.loads(json.dumps(genuine))
    for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
        forged["metadata"].pop(key, None)
    evil = wat_to_wasm(constant_wat(b"forged"))
    forged["binaryData"]["module.wasm"] = base64.b64encode(evil).decode()
    forged["data"]["digest"] = f"sha256:{hashlib.sha256(evil).hexdigest()}"
    as_forger("replace", "-f", "-", stdin=json.dumps(forged))
    # A whole new function and route, labelled like the operator's.
    extra = json.loads(json.dumps(forged))
    extra["metadata"] = {"name": "edgefn-planted", "labels": genuine["metadata"]["labels"]}
    extra["data"]["name"] = "planted"
    as_forger("create", "-f", "-", stdin=json.dumps(extra))
    route = get(cluster, namespace, "configmap", "edgeroute-victim")
    planted_route = {"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": "edgeroute-planted",
                                  "labels": route["metadata"]["labels"]},
                     "data": {**route["data"], "name": "planted",
                              "route.json": route["data"]["route.json"].replace(
                                  "/victim", "/planted").replace('"victim"', '"planted"')}}
    as_forger("create", "-f", "-", stdin=json.dumps(planted_route))
    # The forger cannot write the status that would confirm it.
    refused = as_forger("patch", "ef", "victim", "--subresource=status", "--type=merge",
                        "-p", '{"status": {"handoff": "sha256:00"}}', check=False)
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()
    wait_until(lambda: metric_value(runner.metrics(), "edge_forged_configmaps") >= 3,
               timeout=15, what="forgeries reported")
    assert runner.client.get("/victim").text == "genuine"
    assert runner.client.get("/planted").status_code == 404
    errors = runner.admin.get("/v1/functions").json()["errors"]
    assert any("edgefn-victim" in e and "handoff" in e for e in errors), errors
    assert "does not match status.handoff" in runner.log()
    # The forgery is still in place (nobody repaired it): the runner alone refused it.
    held = get(cluster, namespace, "configmap", "edgefn-victim")
    assert held["data"]["digest"] == forged["data"]["digest"]
    # The operator, running again, writes its ConfigMap back.
    operator.start()
    wait_until(lambda: get(cluster, namespace, "configmap", "edgefn-victim")["data"][
        "digest"] == genuine["data"]["digest"], timeout=30, what="the forgery repaired")
    assert runner.client.get("/victim").text == "genuine"


def test_the_operator_reports_a_missing_env_secret_when_it_may_read_secrets(
        cluster: Cluster, crds: list[str], namespace: str, helm: Helm, tmp_path: Path) -> None:
    """operator.allowSecretRead: Ready=False SecretNotFound until the Secret and key exist."""
    chart = ChartIdentities(cluster, helm, namespace, tmp_path / "ids",
                            values={"operator": {"allowSecretRead": True}}).install()
    try:
        with OperatorProcess(namespace, chart.operator_env(EDGE_OPERATOR_CHECK_SECRETS="true")):
            env = "  env: [{name: T, valueFrom: {secretKeyRef: {name: later, key: t}}}]\n"
            _apply(cluster, namespace, function_yaml("needs", wat_to_wasm(env_probe_wat()),
                                                     extra=env))

            def ready() -> tuple[str, str] | None:
                found = condition(get(cluster, namespace, "ef", "needs"), "Ready")
                return (found["status"], found["reason"]) if found else None

            wait_until(lambda: ready() == ("False", "SecretNotFound"), timeout=30,
                       what="SecretNotFound")
            assert "later" in condition(get(cluster, namespace, "ef", "needs"),
                                        "Ready")["message"]
            assert not get(cluster, namespace, "configmap", "edgefn-needs")
            _apply(cluster, namespace, _secret("later", {"other": "x"}))
            wait_until(lambda: "no key t" in condition(
                get(cluster, namespace, "ef", "needs"), "Ready")["message"], timeout=30,
                what="missing key reported")
            _apply(cluster, namespace, _secret("later", {"t": "x"}))
            wait_until(lambda: ready() == ("True", "Published"), timeout=90,
                       what="published once the key exists")
        refused = chart.forbidden()
        assert not refused, refused
    finally:
        chart.remove()


def test_jwks_uri_is_fetched_by_the_operator_and_published(
        cluster: Cluster, namespace: str, runner: RunnerProcess) -> None:
    issuer = Issuer()
    with FileServer() as files:
        files.routes.update({"/jwks.json": Reply(body=issuer.jwks()),
                             "/gone.json": Reply(404, b"no")})

        def jwt_route(name: str, uri: str) -> dict[str, Any]:
            return _route(name, f"/{name}", "echo", {"jwt": {
                "issuer": ISSUER, "audiences": [AUDIENCE], "jwksUri": uri}})

        _apply(cluster, namespace, function_yaml("echo", wat_to_wasm(echo_wat())),
               jwt_route("oidc", files.url + "/jwks.json"),
               jwt_route("broken", files.url + "/gone.json"))
        bearer = {"authorization": f"Bearer {issuer.token('RS256')}"}
        wait_until(lambda: runner.client.get("/oidc", headers=bearer).status_code == 200,
                   timeout=30, what="token verified with the fetched JWKS")
        assert runner.client.get("/oidc").status_code == 401
        broken = wait_until(lambda: condition(get(cluster, namespace, "er", "broken"), "Ready"),
                            timeout=30, what="broken route reported")
        assert (broken["status"], broken["reason"]) == ("False", "JwksFetchFailed")
        assert "HTTP 404" in broken["message"]
        assert runner.client.get("/broken", headers=bearer).status_code == 401
        published = get(cluster, namespace, "configmap", "edgeroute-oidc")["data"]
        assert json.loads(published["jwks.json"]) == {files.url + "/jwks.json":
                                                      issuer.jwks().decode()}
