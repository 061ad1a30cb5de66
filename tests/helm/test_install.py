"""`helm install` of charts/edge-runner into a real API server harness of its own.

The module starts its own control plane (``cluster`` below), so what it checks does
not depend on what other tests left behind: the chart's CRDs are not there before
its install, and nothing else is.  Every object must be accepted with every toggle
on, the ServiceMonitors, the PrometheusRule and the HTTPRoute against the real CRDs
of the Prometheus Operator and the Gateway API (support.crdschemas: from their Go
module zips); the pods the controllers create must pass the "restricted" Pod
Security Standard; `kubectl auth can-i --as=<service account>` shows that RBAC is as
narrow as the chart claims, with allowed and denied verbs (the Kubernetes tests run
the runner and the operator as these accounts: support.identities).  No kubelet
runs, so pods are admitted but never start.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.crdschemas import FILES, find_crd_schemas
from support.helm import CHART_DIR, Helm, Manifest, parse_manifests
from support.k8s import Cluster, wait_until

pytestmark = pytest.mark.k8s

RELEASE = "edge"
RUNNER_SA = "edge-edge-runner-runner"
OPERATOR_SA = "edge-edge-runner-operator"
CHART_CRDS = ("edgefunctions.edgerunner.dev", "edgeroutes.edgerunner.dev")
THIRD_PARTY_CRDS = ("servicemonitors.monitoring.coreos.com",
                    "prometheusrules.monitoring.coreos.com",
                    "httproutes.gateway.networking.k8s.io")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A control plane of this module's own (an existing cluster is shared)."""
    with Cluster() as started:
        yield started


@pytest.fixture(scope="module", autouse=True)
def crds_before(cluster: Cluster) -> list[str]:
    """The chart's CRDs that existed before anything of this module was installed (autouse:
    taken before the first test, whichever runs first)."""
    found = cluster.kubectl("get", "crd", "-o", "name").stdout.split()
    return [name for name in CHART_CRDS if f"customresourcedefinition.apiextensions.k8s.io/{name}"
            in found]


@pytest.fixture(scope="module")
def third_party_crds(cluster: Cluster) -> Path:
    """The real ServiceMonitor, PrometheusRule and HTTPRoute CRDs, Established."""
    directory = find_crd_schemas()
    for name in FILES:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                        str(directory / name), timeout=120)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    *[f"crd/{name}" for name in THIRD_PARTY_CRDS])
    return directory


def everything_on(team: str, namespace: str) -> dict[str, Any]:
    return {
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "hosts": ["hello.example.com"],
            "tls": [{"secretName": "edge-tls", "hosts": ["hello.example.com"]}],
        },
        "httpRoute": {"enabled": True, "parentRefs": [{"name": "public"}]},
        "monitoring": {
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "grafanaDashboard": {"enabled": True},
        },
        "runner": {
            "autoscaling": {"enabled": True, "minReplicas": 2},
            "networkPolicy": {"enabled": True},
        },
        "operator": {"networkPolicy": {"enabled": True}, "watchNamespaces": [namespace, team]},
    }


@dataclass
class Release:
    namespace: str
    team: str  # a second namespace the operator watches
    other: str  # a namespace nobody watches
    install: subprocess.CompletedProcess[str]
    objects: list[Manifest]


def create_restricted_namespace(cluster: Cluster, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl(
        "label", "namespace", name,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )  # fmt: skip
    return name


def helm_in(cluster: Cluster) -> dict[str, str]:
    return {"KUBECONFIG": str(cluster.kubeconfig)}


@pytest.fixture(scope="module")
def release(helm: Helm, cluster: Cluster, crds_before: list[str], third_party_crds: Path
            ) -> Iterator[Release]:
    namespace = create_restricted_namespace(cluster, "edge")
    team = create_restricted_namespace(cluster, "team")
    other = create_restricted_namespace(cluster, "other")
    install = helm.run(
        "install", RELEASE, str(helm.chart), "--namespace", namespace, "--timeout", "2m",
        *helm.values_args(everything_on(team, namespace)),
        env=helm_in(cluster),
    )  # fmt: skip
    manifest = helm.run(
        "get", "manifest", RELEASE, "--namespace", namespace, env=helm_in(cluster)
    ).stdout
    yield Release(namespace, team, other, install, parse_manifests(manifest))
    helm.run(
        "uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "2m",
        env=helm_in(cluster), check=False,
    )  # fmt: skip
    for name in (namespace, team, other):
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


# --- the install ------------------------------------------------------------------------


def test_every_object_is_accepted(cluster: Cluster, helm: Helm, release: Release) -> None:
    kinds = sorted({obj["kind"] for obj in release.objects})
    assert kinds == sorted([
        "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment",
        "HTTPRoute", "HorizontalPodAutoscaler", "Ingress", "NetworkPolicy",
        "PodDisruptionBudget", "PrometheusRule", "Role", "RoleBinding", "Service",
        "ServiceAccount", "ServiceMonitor",
    ])  # fmt: skip
    text = "\n---\n".join(yaml.safe_dump(obj) for obj in release.objects)
    stored = cluster.kubectl("get", "-f", "-", "-o", "name", input=text).stdout.split()
    assert len(stored) == len(release.objects)
    status = json.loads(
        helm.run(
            "status", RELEASE, "--namespace", release.namespace, "-o", "json",
            env=helm_in(cluster),
        ).stdout
    )  # fmt: skip
    assert status["info"]["status"] == "deployed"


def test_the_chart_installs_the_crds(cluster: Cluster, crds_before: list[str],
                                     release: Release) -> None:
    names = [f"crd/{name}" for name in CHART_CRDS]
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    if cluster.existing:
        return  # a shared cluster may have had them before: nothing more to tell
    assert crds_before == []
    for name in CHART_CRDS:
        stored = json.loads(cluster.kubectl("get", f"crd/{name}", "-o", "json",
                                            "--show-managed-fields").stdout)
        assert {entry["manager"] for entry in stored["metadata"]["managedFields"]} >= {"helm"}
        shipped = yaml.safe_load((CHART_DIR / "crds" / f"{name.split('.')[0][:-1]}.yaml")
                                 .read_text())
        assert stored["spec"]["versions"][0]["schema"] == shipped["spec"]["versions"][0]["schema"]


def test_no_pod_security_warnings(release: Release) -> None:
    assert "would violate PodSecurity" not in release.install.stderr, release.install.stderr


def test_pods_are_admitted_under_the_restricted_standard(
    cluster: Cluster, release: Release
) -> None:
    """The namespace enforces "restricted": the ReplicaSets' pods exist only if they pass."""

    def pods(component: str) -> list[Manifest]:
        listing = cluster.kubectl(
            "get", "pods", "--namespace", release.namespace, "-o", "json",
            "-l", f"app.kubernetes.io/component={component}",
        ).stdout  # fmt: skip
        items: list[Manifest] = json.loads(listing)["items"]
        return items

    def failed_creates() -> str:
        return cluster.kubectl(
            "get", "events", "--namespace", release.namespace,
            "--field-selector", "reason=FailedCreate", "-o", "name",
        ).stdout  # fmt: skip

    def admitted() -> bool:
        assert not failed_creates(), cluster.kubectl(
            "get", "events", "--namespace", release.namespace
        ).stdout
        return len(pods("runner")) >= 1 and len(pods("operator")) == 1

    # The control: this API server does enforce the standard on this namespace.
    refused = cluster.kubectl(
        "run", "privileged", "--image=busybox", "--namespace", release.namespace,
        "--privileged", "--dry-run=server", check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused.stderr
    wait_until(admitted, timeout=60, what="runner and operator pods to be created")
    runner = pods("runner")[0]
    env = {e["name"]: e for e in runner["spec"]["containers"][0]["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_notes_tell_how_to_call_hello_world(release: Release) -> None:
    notes = release.install.stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n {release.namespace} apply -k functions/hello-world" in notes
    assert "curl -k -H 'Host: hello.example.com' https://" in notes
    assert "/hello" in notes


def test_notes_without_an_ingress_use_port_forward(
    cluster: Cluster, helm: Helm, namespace: str
) -> None:
    dry_run = helm.run(
        "install", RELEASE, str(helm.chart), "--namespace", namespace, "--dry-run=client",
        env=helm_in(cluster),
    )  # fmt: skip
    notes = dry_run.stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n {namespace} apply -k functions/hello-world" in notes
    assert f"port-forward service/{RUNNER_SA} 8080:80" in notes
    assert "curl http://localhost:8080/hello" in notes


# --- the third-party objects against their real schemas -------------------------------

THIRD_PARTY_KINDS = ["HTTPRoute", "PrometheusRule", "ServiceMonitor", "ServiceMonitor"]
TUNED: dict[str, Any] = {
    "monitoring": {
        "serviceMonitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "5s",
                           "labels": {"release": "kube-prometheus"}},
        "prometheusRule": {"enabled": True, "labels": {"role": "alert-rules"}},
    },
    "httpRoute": {
        "enabled": True, "annotations": {"team": "edge"},
        "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
        "hostnames": ["hello.example.com", "*.edge.example.com"],
    },
}
#: One wrong field per kind, each of a form the real schema refuses (a stub takes it).
BREAK = {
    "ServiceMonitor": ("spec.endpoints.0.interval", "30 seconds"),
    "PrometheusRule": ("spec.groups.0.rules.0.for", "five minutes"),
    "HTTPRoute": ("spec.rules.0.matches.0.path.type", "Prefix"),
}


def third_party(helm: Helm, namespace: str, values: dict[str, Any]) -> list[Manifest]:
    objects = [obj for obj in helm.render(values, namespace=namespace)
               if obj["kind"] in BREAK]
    assert sorted(obj["kind"] for obj in objects) == THIRD_PARTY_KINDS
    return objects


def dry_run(cluster: Cluster, namespace: str, objects: list[Manifest]
            ) -> subprocess.CompletedProcess[str]:
    """Server-side dry run with kubectl's strict field validation (unknown fields fail)."""
    return cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-",
        input="\n---\n".join(yaml.safe_dump(obj) for obj in objects), check=False)


@pytest.mark.parametrize("variant", ["everything-on", "tuned"])
def test_monitoring_and_gateway_objects_pass_their_real_schemas(
        cluster: Cluster, helm: Helm, third_party_crds: Path, namespace: str, variant: str
) -> None:
    values = everything_on("team", namespace) if variant == "everything-on" else TUNED
    accepted = dry_run(cluster, namespace, third_party(helm, namespace, values))
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.count("(server dry run)") == len(THIRD_PARTY_KINDS), accepted.stdout


@pytest.mark.parametrize("kind", sorted(BREAK))
def test_the_schemas_are_real_a_wrong_field_is_refused(
        cluster: Cluster, helm: Helm, third_party_crds: Path, namespace: str, kind: str
) -> None:
    """The control: stub CRDs would take these; the real ones name the field."""
    dotted, value = BREAK[kind]
    [obj] = [o for o in third_party(helm, namespace, TUNED) if o["kind"] == kind][:1]
    *parents, leaf = dotted.split(".")
    target: Any = obj
    for step in parents:
        target = target[int(step)] if isinstance(target, list) else target[step]
    target[leaf] = value
    refused = dry_run(cluster, namespace, [obj])
    assert refused.returncode != 0, refused.stdout
    assert leaf in refused.stderr and "Invalid value" in refused.stderr, refused.stderr


# --- RBAC, allowed and denied -------------------------------------------------------------

OWN, TEAM, OTHER, CLUSTER = "own", "team", "other", "cluster"

RUNNER_CAN = [
    ("list", "configmaps", OWN, ""),
    ("watch", "configmaps", OWN, ""),
    ("get", "configmaps", OWN, ""),
    ("create", "leases.coordination.k8s.io", OWN, ""),
    ("update", "leases.coordination.k8s.io", OWN, ""),
    ("patch", "leases.coordination.k8s.io", OWN, ""),
    ("delete", "leases.coordination.k8s.io", OWN, ""),
    # Route auth and env valueFrom: Secrets by name; the hand-off: status of its objects.
    ("get", "secrets", OWN, ""),
    ("list", "edgefunctions.edgerunner.dev", OWN, ""),
    ("watch", "edgeroutes.edgerunner.dev", OWN, ""),
]
RUNNER_CANNOT = [
    ("list", "secrets", OWN, ""),
    ("watch", "secrets", OWN, ""),
    ("get", "secrets", TEAM, ""),
    ("create", "configmaps", OWN, ""),
    ("update", "configmaps", OWN, ""),
    ("delete", "configmaps", OWN, ""),
    ("patch", "edgefunctions.edgerunner.dev", OWN, ""),
    ("patch", "edgefunctions.edgerunner.dev", OWN, "status"),
    ("patch", "edgeroutes.edgerunner.dev", OWN, "status"),
    ("list", "leases.coordination.k8s.io", OWN, ""),
    ("create", "pods", OWN, ""),
    ("list", "configmaps", TEAM, ""),
    ("list", "configmaps", CLUSTER, ""),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", CLUSTER, ""),
]
OPERATOR_CAN = [
    ("patch", "edgefunctions.edgerunner.dev", OWN, "status"),
    ("patch", "edgeroutes.edgerunner.dev", OWN, "status"),
    ("list", "edgefunctions.edgerunner.dev", OWN, ""),
    ("watch", "edgeroutes.edgerunner.dev", OWN, ""),
    ("patch", "edgefunctions.edgerunner.dev", OWN, ""),
    ("create", "configmaps", OWN, ""),
    ("update", "configmaps", OWN, ""),
    ("delete", "configmaps", OWN, ""),
    ("create", "events", OWN, ""),
    ("create", "events.events.k8s.io", OWN, ""),
    ("list", "leases.coordination.k8s.io", OWN, ""),
    ("delete", "leases.coordination.k8s.io", OWN, ""),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", CLUSTER, ""),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io", CLUSTER, ""),
    # operator.watchNamespaces: the same rights in the second namespace.
    ("patch", "edgefunctions.edgerunner.dev", TEAM, "status"),
    ("create", "configmaps", TEAM, ""),
]
OPERATOR_CANNOT = [
    ("get", "secrets", OWN, ""),
    ("get", "secrets", TEAM, ""),
    ("delete", "pods", OWN, ""),
    ("create", "pods", OWN, ""),
    ("create", "edgefunctions.edgerunner.dev", OWN, ""),
    ("delete", "edgefunctions.edgerunner.dev", OWN, ""),
    ("update", "edgefunctions.edgerunner.dev", OWN, ""),
    ("create", "leases.coordination.k8s.io", OWN, ""),
    ("update", "leases.coordination.k8s.io", OWN, ""),
    ("create", "deployments.apps", OWN, ""),
    ("list", "namespaces", CLUSTER, ""),
    ("get", "customresourcedefinitions.apiextensions.k8s.io", CLUSTER, ""),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", CLUSTER, ""),
    ("create", "configmaps", OTHER, ""),
    ("list", "edgefunctions.edgerunner.dev", OTHER, ""),
    ("list", "configmaps", CLUSTER, ""),
    ("list", "clusterkopfpeerings.kopf.dev", CLUSTER, ""),
]


Case = tuple[str, str, str, str]  # verb, resource, where, subresource


def can_i(cluster: Cluster, release: Release, account: str, case: Case) -> bool:
    """kubectl auth can-i as the ServiceAccount ``account`` of the release."""
    verb, resource, where, subresource = case
    subject = f"system:serviceaccount:{release.namespace}:{account}"
    args = ["auth", "can-i", verb, resource, f"--as={subject}"]
    if where == CLUSTER:
        args.append("--all-namespaces")
    else:
        scope = {OWN: release.namespace, TEAM: release.team, OTHER: release.other}[where]
        args += ["--namespace", scope]
    if subresource:
        args.append(f"--subresource={subresource}")
    result = cluster.kubectl(*args, check=False)
    answer = result.stdout.strip()
    assert answer in {"yes", "no"}, f"kubectl {' '.join(args)}: {result.stdout}{result.stderr}"
    return answer == "yes"


def ident(case: Case) -> str:
    verb, resource, where, subresource = case
    return f"{verb}-{resource.split('.')[0]}{'/' + subresource if subresource else ''}-{where}"


@pytest.mark.parametrize("case", RUNNER_CAN, ids=ident)
def test_runner_can(cluster: Cluster, release: Release, case: Case) -> None:
    assert can_i(cluster, release, RUNNER_SA, case)


@pytest.mark.parametrize("case", RUNNER_CANNOT, ids=ident)
def test_runner_cannot(cluster: Cluster, release: Release, case: Case) -> None:
    assert not can_i(cluster, release, RUNNER_SA, case)


@pytest.mark.parametrize("case", OPERATOR_CAN, ids=ident)
def test_operator_can(cluster: Cluster, release: Release, case: Case) -> None:
    assert can_i(cluster, release, OPERATOR_SA, case)


@pytest.mark.parametrize("case", OPERATOR_CANNOT, ids=ident)
def test_operator_cannot(cluster: Cluster, release: Release, case: Case) -> None:
    assert not can_i(cluster, release, OPERATOR_SA, case)


# --- a default install's life cycle --------------------------------------------------------


def test_default_install_upgrade_and_uninstall(
    cluster: Cluster, helm: Helm, namespace: str
) -> None:
    env = helm_in(cluster)
    chart = str(helm.chart)
    helm.run("install", "life", chart, "--namespace", namespace, env=env)
    deployment = "deployment/life-edge-runner-runner"
    replicas = cluster.kubectl(
        "get", deployment, "-n", namespace, "-o", "jsonpath={.spec.replicas}"
    ).stdout
    assert replicas == "2"

    helm.run(
        "upgrade", "life", chart, "--namespace", namespace, "--reuse-values",
        "--set", "runner.replicas=3", "--set", "operator.allowSecretRead=true", env=env,
    )  # fmt: skip
    replicas = cluster.kubectl(
        "get", deployment, "-n", namespace, "-o", "jsonpath={.spec.replicas}"
    ).stdout
    assert replicas == "3"
    operator = f"system:serviceaccount:{namespace}:life-edge-runner-operator"
    answer = cluster.kubectl(
        "auth", "can-i", "get", "secrets", "-n", namespace, f"--as={operator}", check=False
    ).stdout.strip()
    assert answer == "yes"  # operator.allowSecretRead

    refused = helm.run(
        "upgrade", "life", chart, "--namespace", namespace, "--reuse-values",
        "--set", "runner.replicaCount=1", env=env, check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "replicaCount" in refused.stderr

    cluster_role = f"clusterrole/{namespace}:life-edge-runner-operator"
    cluster.kubectl("get", cluster_role)
    helm.run("uninstall", "life", "--namespace", namespace, "--wait", env=env)
    gone = cluster.kubectl("get", cluster_role, "--ignore-not-found", "-o", "name").stdout
    assert gone == ""
    left = cluster.kubectl(
        "get", "deployments,services,roles,rolebindings,serviceaccounts", "-n", namespace,
        "-l", "app.kubernetes.io/instance=life", "-o", "name",
    ).stdout  # fmt: skip
    assert left == ""
    # CRDs stay (Helm never deletes crds/): custom resources survive an uninstall.
    cluster.kubectl("get", *[f"crd/{name}" for name in CHART_CRDS])
