"""`helm install` of charts/edge-runner into the real API server harness.

Every object must be accepted (with every toggle on: the CRDs of
ServiceMonitor, PrometheusRule and HTTPRoute are stood in for by minimal stub
CRDs), the pods the controllers create must pass the "restricted" Pod
Security Standard, and `kubectl auth can-i --as=<service account>` proves
that RBAC is as narrow as the chart claims, with allowed and denied verbs.
No kubelet runs, so pods are admitted but never start.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from support.helm import Helm, Manifest, parse_manifests
from support.k8s import Cluster, wait_until

pytestmark = pytest.mark.k8s

RELEASE = "edge"
RUNNER_SA = "edge-edge-runner-runner"
OPERATOR_SA = "edge-edge-runner-operator"
CHART_CRDS = ("edgefunctions.edgerunner.dev", "edgeroutes.edgerunner.dev")


def stub_crd(group: str, kind: str, plural: str) -> Manifest:
    """A CRD that accepts any spec: enough for the chart's objects to be stored."""
    metadata: Manifest = {"name": f"{plural}.{group}"}
    if group.endswith(".k8s.io"):
        # *.k8s.io groups are protected; the real Gateway API CRDs carry this too.
        metadata["annotations"] = {
            "api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/1538"
        }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": metadata,
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


STUB_CRDS = [
    stub_crd("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
    stub_crd("monitoring.coreos.com", "PrometheusRule", "prometheusrules"),
    stub_crd("gateway.networking.k8s.io", "HTTPRoute", "httproutes"),
]


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
def stubs(cluster: Cluster) -> None:
    text = "\n---\n".join(yaml.safe_dump(crd) for crd in STUB_CRDS)
    cluster.kubectl("apply", "-f", "-", input=text)
    names = [f"crd/{crd['metadata']['name']}" for crd in STUB_CRDS]
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)


@pytest.fixture(scope="module")
def release(helm: Helm, cluster: Cluster, stubs: None) -> Iterator[Release]:
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


def test_the_chart_installs_the_crds(cluster: Cluster, release: Release) -> None:
    names = [f"crd/{name}" for name in CHART_CRDS]
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)


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
]
RUNNER_CANNOT = [
    ("get", "secrets", OWN, ""),
    ("list", "secrets", OWN, ""),
    ("create", "configmaps", OWN, ""),
    ("update", "configmaps", OWN, ""),
    ("delete", "configmaps", OWN, ""),
    ("patch", "edgefunctions.edgerunner.dev", OWN, ""),
    ("list", "edgefunctions.edgerunner.dev", OWN, ""),
    ("patch", "edgefunctions.edgerunner.dev", OWN, "status"),
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
