"""From ``edge-runner new`` to a function served in a cluster, on the real API server
(docs/functions.md, README "Write a function" and "Deploy to Kubernetes").

* The crate is made outside the repository, uses a crates.io dependency, is served
  standalone from ``manifests/`` and deployed with ``kubectl apply -k`` from the very
  same spec; an updated module reaches the runner within seconds because the operator
  watches the ConfigMap (its resync is 60 s).  The times are printed (``-s``).
* Status tells the truth: a route to a missing function is Ready=False
  (FunctionNotFound) with an event and answers a final 500; bytes that are not wasm are
  ``NotWebAssembly``; ``Propagated`` is what ``kubectl wait`` waits for; ``kubectl
  explain`` and ``get -o wide`` describe the objects.
* Uninstall: with no finalizers, ``helm uninstall`` then ``kubectl delete -f crds/``
  completes, on a control plane of its own (deleting the CRDs would disturb the other
  tests' shared one).  A kopf finalizer left by an earlier operator version is removed.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from edge_api.models import EdgeFunctionSpec
from support.guests import constant_wat
from support.helm import Helm, find_helm
from support.k8s import Cluster
from support.objects import condition, function_yaml, get, route_yaml
from support.operator import OperatorProcess
from support.runner import REPO_ROOT, RunnerProcess, wait_until
from support.scaffold import EDGE_RUNNER, add_json_dependencies
from support.wasm import wat_to_wasm

pytestmark = pytest.mark.k8s

CRDS_DIR = REPO_ROOT / "crds"
PUBLIC_URL = "http://edge.example.test:8080"
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
HANDLER = """
use edge_sdk::{{Request, Response}};

fn handle(req: &Request) -> Response {{
    let name = req.query_param("name").unwrap_or_else(|| "world".into());
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".into());
    let value = serde_json::json!({{"message": format!("{{}}, {{}}!", greeting, name),
                                   "version": {version}}});
    Response::json(200, value.to_string())
}}

edge_sdk::edge_main!(handle);
"""


def run(*argv: str, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout}{result.stderr}"
    return result


@pytest.fixture
def plane(cluster: Cluster, crds: list[str], namespace: str
          ) -> Iterator[tuple[OperatorProcess, RunnerProcess]]:
    env = {**cluster.env(), "EDGE_OPERATOR_PUBLIC_URL": PUBLIC_URL}
    with OperatorProcess(namespace, env) as operator, \
            RunnerProcess(None, extra_args=["--namespace", namespace], env=env) as runner:
        yield operator, runner


def spec_without_source(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec as the runners see it (defaults applied), minus where the module comes from."""
    normal = EdgeFunctionSpec.model_validate(spec).model_dump(by_alias=True, exclude_none=True)
    normal.pop("source")
    return normal


def test_a_new_function_from_scaffold_to_cluster(
        cluster: Cluster, namespace: str, plane: tuple[OperatorProcess, RunnerProcess],
        tmp_path: Path) -> None:
    operator, runner = plane
    times: dict[str, float] = {}
    started = time.monotonic()
    # Write a function (README): a crate of its own, outside the repository.
    assert not tmp_path.is_relative_to(REPO_ROOT)
    run(str(EDGE_RUNNER), "new", "greeter", "--dir", str(tmp_path), cwd=tmp_path)
    crate = tmp_path / "greeter"
    add_json_dependencies(crate)
    (crate / "src" / "lib.rs").write_text(HANDLER.format(version=1))
    run(str(EDGE_RUNNER), "build", str(crate), cwd=tmp_path)
    times["new + build with serde_json"] = time.monotonic() - started

    with RunnerProcess(crate / "manifests") as laptop:
        local = laptop.client.get("/greeter", params={"name": "Ada"}).json()
    assert local == {"message": "Hello, Ada!", "version": 1}
    times["... + served standalone"] = time.monotonic() - started

    # Deploy (README): the same folder, kubectl apply -k, wait for Propagated.
    env = cluster.env()
    deploy = time.monotonic()
    run("kubectl", "apply", "--server-side", "-n", namespace, "-k", str(crate), cwd=tmp_path,
        env=env)
    run("kubectl", "-n", namespace, "wait", "--for=condition=Propagated",
        "edgefunction/greeter", "--timeout=60s", cwd=tmp_path, env=env)
    served = runner.client.get("/greeter", params={"name": "Ada"})
    assert (served.status_code, served.json()) == (200, local)
    times["apply -k -> Propagated and served"] = time.monotonic() - deploy
    times["new -> served in the cluster"] = time.monotonic() - started

    # One spec: everything but the source is what standalone mode served.
    function = get(cluster, namespace, "ef", "greeter")
    manifest = yaml.safe_load((crate / "manifests" / "function.yaml").read_text())
    assert spec_without_source(function["spec"]) == spec_without_source(manifest["spec"])
    assert function["spec"]["source"] == {"configMapRef": {"name": "greeter-module",
                                                           "key": "module.wasm"}}
    assert function["metadata"].get("finalizers") is None
    wide = cluster.kubectl("get", "er", "greeter", "-n", namespace, "-o", "wide").stdout
    header, row = wide.splitlines()
    assert header.split()[-4:] == ["PATHS", "FUNCTIONS", "URL", "REASON"]
    assert row.split()[-4:] == ["/greeter", "greeter", f"{PUBLIC_URL}/greeter", "Published"]

    # Update: rebuild, apply again. Only the ConfigMap changes; the watch carries it.
    (crate / "src" / "lib.rs").write_text(HANDLER.format(version=2))
    run(str(EDGE_RUNNER), "build", str(crate), cwd=tmp_path)
    update = time.monotonic()
    applied = run("kubectl", "apply", "--server-side", "-n", namespace, "-k", str(crate),
                  cwd=tmp_path, env=env).stdout
    assert "configmap/greeter-module serverside-applied" in applied
    wait_until(lambda: runner.client.get("/greeter").json().get("version") == 2, timeout=20,
               interval=0.2, what="the rebuilt module served (the resync would take 60 s)")
    times["rebuilt module: apply -> served"] = time.monotonic() - update
    assert "Traceback" not in operator.log(), operator.log()[-3000:]
    for what, seconds in times.items():
        print(f"{what}: {seconds:.1f}s")


def test_a_route_to_a_missing_function_is_not_ready_and_final(
        cluster: Cluster, namespace: str, plane: tuple[OperatorProcess, RunnerProcess]) -> None:
    _operator, runner = plane
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=route_yaml("ghost", "/ghost", "nobody"))

    def not_found() -> dict[str, Any] | None:
        ready = condition(get(cluster, namespace, "er", "ghost"), "Ready")
        return ready if ready.get("reason") == "FunctionNotFound" else None

    ready = wait_until(not_found, timeout=30, interval=0.5, what="FunctionNotFound")
    assert ready["status"] == "False" and "nobody" in ready["message"]
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o",
                                        "json").stdout)["items"]
    assert any(e["reason"] == "FunctionNotFound" and e["involvedObject"]["name"] == "ghost"
               and e["type"] == "Warning" for e in events)
    def final_error() -> httpx.Response | None:
        response = runner.client.get("/ghost")
        return response if response.status_code == 500 else None

    final = wait_until(final_error, timeout=20, what="a final 500")
    assert "retry-after" not in final.headers
    assert final.json()["type"].endswith("/function-not-found")

    # Once the function exists, the route is Ready and serves it.
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=function_yaml("nobody", wat_to_wasm(constant_wat(b"here"))))
    wait_until(lambda: condition(get(cluster, namespace, "er", "ghost"),
                                 "Ready").get("status") == "True",
               timeout=30, interval=0.5, what="Ready once the function exists")
    wait_until(lambda: runner.client.get("/ghost").text == "here", timeout=20, what="served")
    # And when it goes away again, the route says so.
    cluster.kubectl("delete", "ef", "nobody", "-n", namespace)
    wait_until(not_found, timeout=30, interval=0.5, what="FunctionNotFound after delete")


def test_bytes_that_are_not_wasm_are_named_so(
        cluster: Cluster, namespace: str, plane: tuple[OperatorProcess, RunnerProcess],
        tmp_path: Path) -> None:
    module = tmp_path / "module.wasm"
    module.write_text("PASSWORD=hunter2\n")
    cluster.kubectl("create", "configmap", "text-module", "-n", namespace,
                    f"--from-file=module.wasm={module}")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeFunction",
        "metadata": {"name": "text"},
        "spec": {"source": {"configMapRef": {"name": "text-module"}}}}))
    valid = wait_until(lambda: condition(get(cluster, namespace, "ef", "text"),
                                         "ModuleValid") or None, timeout=30, interval=0.5)
    assert (valid["status"], valid["reason"]) == ("False", "NotWebAssembly")
    assert valid["message"].startswith("not a WebAssembly binary") and "hunter2" not in \
        valid["message"]
    wide = cluster.kubectl("get", "ef", "text", "-n", namespace, "-o", "wide").stdout
    assert "NotWebAssembly" in wide and "PROPAGATED" in wide


def test_kubectl_explain_teaches_the_api(cluster: Cluster, crds: list[str]) -> None:
    memory = cluster.kubectl("explain", "edgefunction.spec.limits.memory").stdout
    assert "Default 64Mi" in memory
    for field in ("edgefunction.spec", "edgefunction.spec.limits", "edgefunction.spec.pool",
                  "edgeroute.spec.rules", "edgeroute.spec.rules.match"):
        text = cluster.kubectl("explain", field).stdout
        description = text.split("DESCRIPTION:", 1)[1].split("FIELDS:", 1)[0]
        assert "<empty>" not in description and description.strip(), field
        assert "<no description>" not in text, field


def test_hello_world_sample_is_one_spec(cluster: Cluster, hello_wasm: Path) -> None:
    """The sample's cluster form is its standalone manifest with only the source swapped."""
    sample = REPO_ROOT / "functions" / "hello-world"
    rendered = list(yaml.safe_load_all(cluster.kubectl("kustomize", str(sample)).stdout))
    [function] = [d for d in rendered if d["kind"] == "EdgeFunction"]
    manifest = yaml.safe_load((sample / "manifests" / "function.yaml").read_text())
    assert spec_without_source(function["spec"]) == spec_without_source(manifest["spec"])
    assert function["spec"]["source"]["configMapRef"]["name"] == "hello-world-module"


# -- uninstall, on a control plane of its own -------------------------------------------------


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    with Cluster() as started:
        if started.existing:
            pytest.skip("deletes the CRDs: needs a control plane of its own")
        yield started


def garbage_collector_watches(cluster: Cluster, namespace: str, kind: str) -> None:
    """Wait until the garbage collector deletes what a deleted ``kind`` object owned.

    It starts watching a new resource at its next discovery resync (up to 30 s); a
    dependent it first sees after the owner's CRD is gone stays, as its owner can no
    longer be resolved.  Installed CRDs are normally far older than that.
    """
    probe = yaml.safe_load(function_yaml("gc-probe", wat_to_wasm(constant_wat(b"p")))
                           if kind == "ef" else route_yaml("gc-probe", "/gc", "gc-probe"))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(probe))
    owner = get(cluster, namespace, kind, "gc-probe")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": f"gc-probe-{kind}", "ownerReferences": [{
            "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": "gc-probe",
            "uid": owner["metadata"]["uid"]}]}}))
    cluster.kubectl("delete", kind, "gc-probe", "-n", namespace)
    wait_until(lambda: cluster.kubectl("get", "configmap", f"gc-probe-{kind}", "-n", namespace,
                                       "--ignore-not-found", "-o", "name").stdout == "",
               timeout=90, interval=1, what=f"the garbage collector to watch {kind}")


@pytest.mark.slow
def test_helm_uninstall_then_deleting_the_crds_needs_no_manual_step(
        own_cluster: Cluster, tmp_path: Path) -> None:
    cluster = own_cluster
    env = cluster.env()
    helm = Helm(find_helm(), home=tmp_path / "helm")
    namespace = "edge"
    # The README's install: CRDs, then the chart (its pods never run here: no kubelet;
    # an operator process in that namespace plays the operator pod).
    cluster.kubectl("apply", "--server-side", "-f", str(CRDS_DIR))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/edgefunctions.edgerunner.dev", "crd/edgeroutes.edgerunner.dev")
    cluster.kubectl("create", "namespace", namespace)
    for kind in ("ef", "er"):  # as in a cluster whose CRDs are not seconds old
        garbage_collector_watches(cluster, namespace, kind)
    helm.run("install", "edge-runner", str(helm.chart), "-n", namespace, "--create-namespace",
             env={"KUBECONFIG": env["KUBECONFIG"]})  # --create-namespace: as the README
    # An object an earlier operator version left its kopf finalizer on.
    legacy = yaml.safe_load(function_yaml("legacy", wat_to_wasm(constant_wat(b"old"))))
    legacy["metadata"]["finalizers"] = [KOPF_FINALIZER]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(legacy))
    with OperatorProcess(namespace, env) as operator:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=function_yaml(
            "fn", wat_to_wasm(constant_wat(b"x"))) + "---\n" + route_yaml("rt", "/x", "fn"))
        for kind, name in (("ef", "fn"), ("er", "rt"), ("ef", "legacy")):
            def ready(k: str = kind, n: str = name) -> bool:
                return condition(get(cluster, namespace, k, n), "Ready").get("status") == "True"

            wait_until(ready, timeout=30, interval=0.5, what=f"{kind}/{name} Ready")
        wait_until(lambda: not get(cluster, namespace, "ef", "legacy")["metadata"].get(
            "finalizers"), timeout=30, interval=0.5, what="the legacy finalizer removed")
        for kind in ("ef", "er"):
            for item in json.loads(cluster.kubectl("get", kind, "-n", namespace, "-o",
                                                   "json").stdout)["items"]:
                assert not item["metadata"].get("finalizers"), item["metadata"]
        assert "Traceback" not in operator.log()
    # The operator is gone (helm uninstall removes its Deployment), then:
    helm.run("uninstall", "edge-runner", "-n", namespace, "--wait",
             env={"KUBECONFIG": env["KUBECONFIG"]})
    started = time.monotonic()
    deleted = cluster.kubectl("delete", "-f", str(CRDS_DIR), "--timeout=60s", check=False,
                              timeout=90)
    assert deleted.returncode == 0, deleted.stderr
    print(f"kubectl delete -f crds/: {time.monotonic() - started:.1f}s")
    left = cluster.kubectl("get", "crd", "-o", "name").stdout
    assert "edgerunner.dev" not in left
    configmaps = cluster.kubectl("get", "configmaps", "-n", namespace, "-l",
                                 "edgerunner.dev/kind", "-o", "name").stdout
    wait_until(lambda: cluster.kubectl("get", "configmaps", "-n", namespace, "-l",
                                       "edgerunner.dev/kind", "-o", "name").stdout == "",
               timeout=60, interval=1, what=f"garbage collection of {configmaps}")
