"""``source.url`` and ``source.configMapRef`` through a real operator (docs/resources.md).

The module comes from a real HTTP server on loopback (support.fileserver) or a real
ConfigMap; the operator runs as the chart's ServiceAccount.  Checked: the conditions
and reasons of each failure, which failures are retried (transient: 5 s after) and
which are not (fetched once), the published digest, a ConfigMap or key that appears
later, and that an edited ConfigMap reaches a runner within seconds (the operator
watches referenced ConfigMaps).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.fileserver import FileServer, Reply, redirect
from support.guests import constant_wat
from support.identities import ChartIdentities
from support.k8s import Cluster
from support.objects import condition, get, route_yaml
from support.operator import OperatorProcess
from support.runner import RunnerProcess, wait_until
from support.wasm import wat_to_wasm

pytestmark = pytest.mark.k8s

ONE = wat_to_wasm(constant_wat(b"one"))
TWO = wat_to_wasm(constant_wat(b"two"))
#: The operator's --max-module-bytes here: ONE and TWO fit, BIG does not.
MAX_URL_BYTES = 4096
BIG = wat_to_wasm(constant_wat(b"big", extra=f'(data (i32.const 8192) "{"x" * 5000}")'))
#: First retry of a transient failure (5 s) + reconcile and polling slack.
RETRY_BOUND = 5 + 5
#: "Within seconds" of a change of a referenced ConfigMap: a reconcile and a runner's
#: reload, with slack.
CHANGE_BOUND = 10


def sha(module: bytes) -> str:
    return hashlib.sha256(module).hexdigest()


def function(name: str, source: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeFunction",
                       "metadata": {"name": name}, "spec": {"source": source}})


def url(files: FileServer, path: str, module: bytes) -> dict[str, Any]:
    return {"url": {"url": files.url + path, "sha256": sha(module)}}


def conditions(cluster: Cluster, namespace: str, name: str) -> dict[str, tuple[str, str]]:
    obj = get(cluster, namespace, "ef", name)
    return {c["type"]: (c["status"], c["reason"])
            for c in (obj.get("status") or {}).get("conditions", [])}


def settle(cluster: Cluster, namespace: str, names: list[str]) -> dict[str, dict[str, Any]]:
    """Wait until each function has Ready and ModuleValid; their conditions."""
    def done() -> dict[str, dict[str, Any]] | None:
        found = {name: conditions(cluster, namespace, name) for name in names}
        return found if all({"Ready", "ModuleValid"} <= set(c) for c in found.values()) \
            else None

    return wait_until(done, timeout=30, what=f"conditions of {names}")


@pytest.fixture
def files() -> Iterator[FileServer]:
    with FileServer() as server:
        yield server


@pytest.fixture
def operator(namespace: str, identities: ChartIdentities) -> Iterator[OperatorProcess]:
    env = identities.operator_env(EDGE_OPERATOR_MAX_MODULE_BYTES=str(MAX_URL_BYTES),
                                     EDGE_OPERATOR_ALLOW_FETCH_FROM="127.0.0.0/8")
    with OperatorProcess(namespace, env) as started:
        yield started


def test_url_sources(cluster: Cluster, namespace: str, operator: OperatorProcess,
                     files: FileServer) -> None:
    files.routes.update({
        "/one.wasm": Reply(body=ONE), "/moved.wasm": redirect("/one.wasm", 301),
        "/wrong.wasm": Reply(body=TWO), "/big.wasm": Reply(body=BIG),
        "/later.wasm": Reply(404, b"not yet"),
    })
    sources = {
        "right": url(files, "/one.wasm", ONE),
        "redirected": url(files, "/moved.wasm", ONE),
        "wrong": url(files, "/wrong.wasm", ONE),  # serves TWO
        "big": url(files, "/big.wasm", BIG),
        "later": url(files, "/later.wasm", TWO),
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input="\n---\n".join(function(n, s) for n, s in sources.items()))
    found = settle(cluster, namespace, list(sources))
    failed_at = time.monotonic()
    assert {name: (c["Ready"], c["ModuleValid"]) for name, c in found.items()} == {
        "right": (("True", "Published"), ("True", "Valid")),
        "redirected": (("True", "Published"), ("True", "Valid")),
        "wrong": (("False", "DigestMismatch"), ("False", "DigestMismatch")),
        "big": (("False", "ModuleTooLarge"), ("False", "ModuleTooLarge")),
        "later": (("False", "FetchFailed"), ("Unknown", "FetchFailed")),
    }
    for name in ("right", "redirected"):
        status = get(cluster, namespace, "ef", name)["status"]
        assert (status["digest"], status["size"]) == (f"sha256:{sha(ONE)}", len(ONE))
        published = get(cluster, namespace, "configmap", f"edgefn-{name}")
        assert published, f"edgefn-{name} not written"
    wrong = condition(get(cluster, namespace, "ef", "wrong"), "Ready")["message"]
    assert sha(TWO) in wrong and sha(ONE) in wrong
    for name in ("wrong", "big", "later"):
        assert not get(cluster, namespace, "configmap", f"edgefn-{name}")
    assert "HTTP 404" in condition(get(cluster, namespace, "ef", "later"), "Ready")["message"]

    # The transient failure is retried 5 s later and succeeds; the others are not.
    files.routes["/later.wasm"] = Reply(body=TWO)
    wait_until(lambda: conditions(cluster, namespace, "later").get("Ready") ==
               ("True", "Published"), timeout=RETRY_BOUND, what="later Ready after a retry")
    assert time.monotonic() - failed_at < RETRY_BOUND
    assert files.hits["/later.wasm"] >= 2
    assert (files.hits["/wrong.wasm"], files.hits["/big.wasm"]) == (1, 1)
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o",
                                        "json").stdout)["items"]
    warned = {(e["involvedObject"]["name"], e["reason"]) for e in events if e["type"] == "Warning"}
    assert {("wrong", "DigestMismatch"), ("big", "ModuleTooLarge"),
            ("later", "FetchFailed")} <= warned


def _configmap(cluster: Cluster, namespace: str, tmp_path: Path, modules: dict[str, bytes],
               *, verb: str = "create") -> None:
    args = []
    for key, module in modules.items():
        (tmp_path / key).write_bytes(module)
        args.append(f"--from-file={key}={tmp_path / key}")
    manifest = cluster.kubectl("create", "configmap", "mods", "-n", namespace, *args,
                               "--dry-run=client", "-o", "json").stdout
    cluster.kubectl(verb, "-n", namespace, "-f", "-", input=manifest)


def test_configmap_sources(cluster: Cluster, namespace: str, operator: OperatorProcess,
                           tmp_path: Path) -> None:
    _configmap(cluster, namespace, tmp_path, {"module.wasm": ONE})
    sources = {
        "default-key": {"configMapRef": {"name": "mods"}},
        "other-key": {"configMapRef": {"name": "mods", "key": "other.wasm"}},
        "absent": {"configMapRef": {"name": "later"}},
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input="\n---\n".join(function(n, s) for n, s in sources.items()))
    found = settle(cluster, namespace, list(sources))
    assert found["default-key"]["Ready"] == ("True", "Published")
    assert get(cluster, namespace, "ef", "default-key")["status"]["digest"] == \
        f"sha256:{sha(ONE)}"
    assert (found["other-key"]["Ready"], found["other-key"]["ModuleValid"]) == (
        ("False", "KeyNotFound"), ("Unknown", "KeyNotFound"))
    assert "other.wasm" in condition(get(cluster, namespace, "ef", "other-key"),
                                     "Ready")["message"]
    assert (found["absent"]["Ready"], found["absent"]["ModuleValid"]) == (
        ("False", "ConfigMapNotFound"), ("Unknown", "ConfigMapNotFound"))

    # The key appears: the transient failure's retry publishes it.
    _configmap(cluster, namespace, tmp_path, {"module.wasm": ONE, "other.wasm": TWO},
               verb="replace")
    wait_until(lambda: conditions(cluster, namespace, "other-key").get("Ready") ==
               ("True", "Published"), timeout=RETRY_BOUND, what="other-key after a retry")
    assert get(cluster, namespace, "ef", "other-key")["status"]["digest"] == \
        f"sha256:{sha(TWO)}"

    # The missing ConfigMap appears.
    (tmp_path / "later.wasm").write_bytes(ONE)
    cluster.kubectl("create", "configmap", "later", "-n", namespace,
                    f"--from-file=module.wasm={tmp_path / 'later.wasm'}")
    wait_until(lambda: conditions(cluster, namespace, "absent").get("Ready") ==
               ("True", "Published"), timeout=RETRY_BOUND, what="absent after it appeared")


def test_an_edited_configmap_is_served_within_seconds(
        cluster: Cluster, namespace: str, operator: OperatorProcess,
        identities: ChartIdentities, tmp_path: Path) -> None:
    _configmap(cluster, namespace, tmp_path, {"module.wasm": ONE})
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=function("edited", {"configMapRef": {"name": "mods"}}) + "\n---\n"
                    + route_yaml("edited", "/edited", "edited"))
    env = identities.runner_env()
    with RunnerProcess(None, extra_args=["--namespace", namespace], env=env) as runner:
        wait_until(lambda: runner.client.get("/edited").text == "one", timeout=30,
                   what="ONE served")
        _configmap(cluster, namespace, tmp_path, {"module.wasm": TWO}, verb="replace")
        edited = time.monotonic()
        wait_until(lambda: runner.client.get("/edited").text == "two",
                   timeout=CHANGE_BOUND, what="TWO served after the edit")
        print(f"ConfigMap edit -> served: {time.monotonic() - edited:.1f}s")
    assert get(cluster, namespace, "ef", "edited")["status"]["digest"] == f"sha256:{sha(TWO)}"
