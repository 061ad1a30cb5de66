"""`helm lint` and `helm template` of charts/edge-runner over a matrix of values.

helm-unittest style: each case sets values, renders the chart and asserts on
paths of the rendered objects. No cluster is needed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from support.helm import CHART_DIR, Helm, Manifest, Rendered, container, path

NAMESPACE = "edge-system"
RELEASE = "edge"
RUNNER = "edge-edge-runner-runner"  # "<release>-<chart>-runner"
RUNNER_ADMIN = "edge-edge-runner-runner-admin"
OPERATOR = "edge-edge-runner-operator"
OPERATOR_METRICS = "edge-edge-runner-operator-metrics"
APP_VERSION = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"]

INGRESS_TLS: dict[str, Any] = {
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
        "hosts": ["hello.example.com", "api.example.com"],
        "tls": [{"secretName": "edge-tls", "hosts": ["hello.example.com", "api.example.com"]}],
    }
}
SCALING: dict[str, Any] = {
    "runner": {
        "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12},
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
        "networkPolicy": {
            "enabled": True,
            "httpFrom": [
                {"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}
            ],
            "adminFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        },
    },
    "operator": {"networkPolicy": {"enabled": True}},
}
MONITORING: dict[str, Any] = {
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
        "grafanaDashboard": {"enabled": True, "namespace": "grafana"},
    }
}
GATEWAY: dict[str, Any] = {
    "httpRoute": {
        "enabled": True,
        "parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
        "hostnames": ["hello.example.com"],
    }
}
MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "ingress-tls": INGRESS_TLS,
    "hpa-pdb-networkpolicy": SCALING,
    "monitoring": MONITORING,
    "gateway": GATEWAY,
    "everything": {**INGRESS_TLS, **SCALING, **MONITORING, **GATEWAY},
}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}
# Objects whose name has a cluster-wide or DNS-label limit of 63 characters.
NAME_LIMITED_KINDS = {
    "Deployment", "Service", "ServiceAccount", "Role", "RoleBinding", "Ingress",
    "HTTPRoute", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy",
    "ServiceMonitor", "PrometheusRule", "ConfigMap",
}  # fmt: skip


def render(helm: Helm, values: dict[str, Any] | None = None, **kwargs: Any) -> Rendered:
    kwargs.setdefault("release", RELEASE)
    kwargs.setdefault("namespace", NAMESPACE)
    return helm.render(values, **kwargs)


def env_of(manifest: Manifest, name: str) -> dict[str, Any]:
    return {item["name"]: item for item in container(manifest, name).get("env", [])}


# --- the whole matrix ---------------------------------------------------------


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_lint_is_clean(helm: Helm, case: str) -> None:
    result = helm.lint(MATRIX[case])
    assert "0 chart(s) failed" in result.stdout, result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_every_object_is_labelled_named_and_namespaced(helm: Helm, case: str) -> None:
    rendered = render(helm, MATRIX[case])
    seen: set[tuple[str, str, str]] = set()
    for obj in rendered:
        meta = obj["metadata"]
        what = f"{obj['kind']}/{meta['name']}"
        labels = meta.get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "edge-runner", what
        assert labels.get("app.kubernetes.io/instance") == RELEASE, what
        assert labels.get("app.kubernetes.io/version") == APP_VERSION, what
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", what
        assert labels.get("app.kubernetes.io/part-of") == "edge-runner", what
        assert labels.get("helm.sh/chart", "").startswith("edge-runner-"), what
        if obj["kind"] in NAME_LIMITED_KINDS:
            assert len(meta["name"]) <= 63, what
        if obj["kind"] not in {"ClusterRole", "ClusterRoleBinding"}:
            assert meta.get("namespace"), f"{what} has no namespace"
        key = (obj["kind"], meta.get("namespace", ""), meta["name"])
        assert key not in seen, f"{what} rendered twice"
        seen.add(key)


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_pods_meet_the_restricted_pod_security_standard(helm: Helm, case: str) -> None:
    for deployment in render(helm, MATRIX[case]).all("Deployment"):
        pod = path(deployment, "spec.template.spec")
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 65532
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not pod.get("hostNetwork") and not pod.get("hostPID")
        for item in pod["containers"]:
            context = item["securityContext"]
            for key, want in RESTRICTED_CONTAINER.items():
                assert context[key] == want, f"{item['name']}: securityContext.{key}"
            mounts = {m["mountPath"]: m["name"] for m in item["volumeMounts"]}
            assert "/tmp" in mounts
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert all("emptyDir" in v for v in volumes.values()), "only emptyDir volumes"


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_no_rbac_rule_uses_wildcards_or_lists_secrets(helm: Helm, case: str) -> None:
    rendered = render(helm, MATRIX[case])
    roles = rendered.all("Role") + rendered.all("ClusterRole")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], f"{role['metadata']['name']}: {key} has *"
            if "secrets" in rule["resources"]:  # by name only: never list or watch them
                assert rule["resources"] == ["secrets"] and rule["verbs"] == ["get"], \
                    role["metadata"]["name"]
            assert "pods" not in rule["resources"], role["metadata"]["name"]


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_services_select_the_pods_and_name_their_ports(helm: Helm, case: str) -> None:
    rendered = render(helm, MATRIX[case])
    templates = {
        d["metadata"]["name"]: path(d, "spec.template") for d in rendered.all("Deployment")
    }
    for service in rendered.all("Service"):
        selector = service["spec"]["selector"]
        matches = [
            t for t in templates.values()
            if selector.items() <= t["metadata"]["labels"].items()
        ]  # fmt: skip
        assert len(matches) == 1, service["metadata"]["name"]
        port_names = {
            p["name"] for c in matches[0]["spec"]["containers"] for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, service["metadata"]["name"]


# --- defaults -------------------------------------------------------------------


def test_defaults_render_exactly_the_core_objects(helm: Helm) -> None:
    rendered = render(helm)
    assert rendered.kinds() == sorted([
        "ClusterRole", "ClusterRoleBinding",
        "Deployment", "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Role", "Role", "RoleBinding", "RoleBinding",
        "Service", "Service", "Service",
        "ServiceAccount", "ServiceAccount",
    ])  # fmt: skip
    services = {s["metadata"]["name"] for s in rendered.all("Service")}
    assert services == {RUNNER, RUNNER_ADMIN, OPERATOR_METRICS}


def test_runner_deployment_defaults(helm: Helm) -> None:
    deployment = render(helm).one("Deployment", RUNNER)
    assert path(deployment, "spec.replicas") == 2
    runner = container(deployment, "runner")
    assert runner["image"] == f"ghcr.io/edge-runner/runner:{APP_VERSION}"
    assert runner["imagePullPolicy"] == "IfNotPresent"
    assert runner["command"] == ["edge-runner"]
    assert runner["args"] == [
        "serve",
        "--port=8080",
        "--admin-port=9090",
        "--namespace=$(POD_NAMESPACE)",
        "--log-level=info",
        "--log-format=json",
        "--drain-delay=5",
        "--grace=25",
    ]
    assert {p["name"]: p["containerPort"] for p in runner["ports"]} == {
        "http": 8080,
        "admin": 9090,
    }
    assert path(runner, "livenessProbe.httpGet") == {"path": "/healthz", "port": "admin"}
    assert path(runner, "readinessProbe.httpGet") == {"path": "/readyz", "port": "admin"}
    assert path(runner, "resources.limits.memory") == "512Mi"
    assert path(deployment, "spec.template.spec.terminationGracePeriodSeconds") == 5 + 25 + 5
    assert path(deployment, "spec.strategy.rollingUpdate.maxUnavailable") == 0


def test_runner_gets_pod_identity_and_memory_limit_from_the_downward_api(helm: Helm) -> None:
    env = env_of(render(helm).one("Deployment", RUNNER), "runner")
    assert path(env["POD_NAME"], "valueFrom.fieldRef.fieldPath") == "metadata.name"
    assert path(env["POD_NAMESPACE"], "valueFrom.fieldRef.fieldPath") == "metadata.namespace"
    assert path(env["EDGE_RUNNER_MEMORY_LIMIT"], "valueFrom.resourceFieldRef") == {
        "containerName": "runner",
        "resource": "limits.memory",
        "divisor": "1",
    }
    assert env["EDGE_RUNNER_CACHE_DIR"]["value"] == "/var/cache/edge-runner"


def test_runner_has_writable_tmp_and_module_cache(helm: Helm) -> None:
    deployment = render(helm).one("Deployment", RUNNER)
    mounts = {m["mountPath"]: m["name"] for m in container(deployment, "runner")["volumeMounts"]}
    assert set(mounts) == {"/tmp", "/var/cache/edge-runner"}
    volumes = {v["name"]: v for v in path(deployment, "spec.template.spec.volumes")}
    assert volumes[mounts["/var/cache/edge-runner"]]["emptyDir"] == {"sizeLimit": "1Gi"}
    assert volumes[mounts["/tmp"]]["emptyDir"] == {"sizeLimit": "64Mi"}


def test_operator_deployment_defaults(helm: Helm) -> None:
    deployment = render(helm).one("Deployment", OPERATOR)
    assert path(deployment, "spec.replicas") == 1
    assert path(deployment, "spec.strategy.type") == "Recreate"
    operator = container(deployment, "operator")
    assert operator["image"] == f"ghcr.io/edge-runner/operator:{APP_VERSION}"
    assert operator["command"] == ["edge-operator"]
    assert operator["args"] == [
        f"--namespace={NAMESPACE}",
        "--metrics-port=8000",
        "--health-port=8081",
        "--log-level=info",
        "--log-format=json",
    ]
    assert path(operator, "livenessProbe.httpGet") == {"path": "/healthz", "port": "health"}
    env = env_of(deployment, "operator")
    assert path(env["POD_NAMESPACE"], "valueFrom.fieldRef.fieldPath") == "metadata.namespace"
    assert path(env["POD_NAME"], "valueFrom.fieldRef.fieldPath") == "metadata.name"


def test_services_ports(helm: Helm) -> None:
    rendered = render(helm)
    data = rendered.one("Service", RUNNER)
    assert [(p["name"], p["port"], p["targetPort"]) for p in data["spec"]["ports"]] == [
        ("http", 80, "http")
    ]
    admin = rendered.one("Service", RUNNER_ADMIN)
    assert [(p["name"], p["port"], p["targetPort"]) for p in admin["spec"]["ports"]] == [
        ("admin", 9090, "admin")
    ]
    metrics = rendered.one("Service", OPERATOR_METRICS)
    assert [(p["name"], p["port"], p["targetPort"]) for p in metrics["spec"]["ports"]] == [
        ("metrics", 8000, "metrics")
    ]


def test_operator_metrics_off_removes_port_and_service(helm: Helm) -> None:
    rendered = render(helm, {"operator": {"metrics": {"enabled": False}}})
    assert not any(s["metadata"]["name"] == OPERATOR_METRICS for s in rendered.all("Service"))
    operator = container(rendered.one("Deployment", OPERATOR), "operator")
    assert "--metrics-port=0" in operator["args"]
    assert [p["name"] for p in operator["ports"]] == ["health"]


# --- RBAC -----------------------------------------------------------------------


def rules_of(role: Manifest) -> list[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]:
    return [
        (tuple(r["apiGroups"]), tuple(r["resources"]), tuple(sorted(r["verbs"])))
        for r in role["rules"]
    ]


def test_runner_role_is_least_privilege(helm: Helm) -> None:
    rendered = render(helm)
    role = rendered.one("Role", RUNNER)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert rules_of(role) == [
        (("",), ("configmaps",), ("get", "list", "watch")),
        (("edgerunner.dev",), ("edgefunctions", "edgeroutes"), ("get", "list", "watch")),
        (("",), ("secrets",), ("get",)),
        (("coordination.k8s.io",), ("leases",), ("create", "delete", "get", "patch", "update")),
    ]
    binding = rendered.one("RoleBinding", RUNNER)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": RUNNER,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": RUNNER, "namespace": NAMESPACE}
    ]
    assert path(rendered.one("Deployment", RUNNER), "spec.template.spec.serviceAccountName") == (
        RUNNER
    )


def test_operator_roles_are_least_privilege(helm: Helm) -> None:
    rendered = render(helm)
    role = rendered.one("Role", OPERATOR)
    assert rules_of(role) == [
        (("edgerunner.dev",), ("edgefunctions", "edgeroutes"), ("get", "list", "patch", "watch")),
        (("edgerunner.dev",), ("edgefunctions/status", "edgeroutes/status"), ("get", "patch")),
        (("edgerunner.dev",), ("edgefunctions/finalizers", "edgeroutes/finalizers"), ("update",)),
        (("",), ("configmaps",),
         ("create", "delete", "get", "list", "patch", "update", "watch")),
        (("",), ("events",), ("create", "patch")),
        (("events.k8s.io",), ("events",), ("create", "patch")),
        (("coordination.k8s.io",), ("leases",), ("delete", "get", "list", "watch")),
    ]  # fmt: skip
    cluster_role = rendered.one("ClusterRole")
    assert rules_of(cluster_role) == [
        (("apiextensions.k8s.io",), ("customresourcedefinitions",), ("list", "watch"))
    ]
    # Cluster-scoped names carry the namespace: two releases never share one.
    assert cluster_role["metadata"]["name"] == f"{NAMESPACE}:{OPERATOR}"
    binding = rendered.one("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": OPERATOR, "namespace": NAMESPACE}
    ]


def test_allow_secret_read_grants_get_on_secrets_to_the_operator(helm: Helm) -> None:
    rendered = render(helm, {"operator": {"allowSecretRead": True}})
    secret_rules = [
        (role["metadata"]["name"], rule["verbs"])
        for role in rendered.all("Role")
        for rule in role["rules"]
        if "secrets" in rule["resources"]
    ]
    # The runner's get (route auth, env) is always there; the operator's only when allowed.
    assert sorted(secret_rules) == [(OPERATOR, ["get"]), (RUNNER, ["get"])]
    assert [name for name, _ in secret_rules_of(render(helm))] == [RUNNER]


def secret_rules_of(rendered: Any) -> list[tuple[str, list[str]]]:
    return [(role["metadata"]["name"], rule["verbs"]) for role in rendered.all("Role")
            for rule in role["rules"] if "secrets" in rule["resources"]]


def test_watch_namespaces_get_a_role_and_an_argument_each(helm: Helm) -> None:
    rendered = render(helm, {"operator": {"watchNamespaces": ["team-a", "team-b"]}})
    operator = container(rendered.one("Deployment", OPERATOR), "operator")
    assert [a for a in operator["args"] if a.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    roles = [r for r in rendered.all("Role") if r["metadata"]["name"] == OPERATOR]
    bindings = [b for b in rendered.all("RoleBinding") if b["metadata"]["name"] == OPERATOR]
    assert {r["metadata"]["namespace"] for r in roles} == {"team-a", "team-b"}
    assert {b["metadata"]["namespace"] for b in bindings} == {"team-a", "team-b"}
    assert all(b["subjects"][0]["namespace"] == NAMESPACE for b in bindings)
    # The runner still serves (and may read) only its own namespace.
    assert rendered.one("Role", RUNNER)["metadata"]["namespace"] == NAMESPACE


def test_rbac_create_false_renders_no_rbac(helm: Helm) -> None:
    rendered = render(helm, {"rbac": {"create": False}})
    for kind in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
        assert not rendered.has(kind), kind


def test_existing_service_accounts(helm: Helm) -> None:
    rendered = render(
        helm,
        {
            "runner": {"serviceAccount": {"create": False, "name": "my-runner"}},
            "operator": {"serviceAccount": {"create": False, "name": "my-operator"}},
        },
    )
    assert not rendered.has("ServiceAccount")
    runner = rendered.one("Deployment", RUNNER)
    assert path(runner, "spec.template.spec.serviceAccountName") == "my-runner"
    assert rendered.one("RoleBinding", RUNNER)["subjects"][0]["name"] == "my-runner"
    assert rendered.one("ClusterRoleBinding")["subjects"][0]["name"] == "my-operator"


# --- Ingress and Gateway API ----------------------------------------------------------


def test_ingress_with_tls_routes_every_path_of_every_host_to_the_runner(helm: Helm) -> None:
    ingress = render(helm, INGRESS_TLS).one("Ingress", RUNNER)
    assert path(ingress, "spec.ingressClassName") == "nginx"
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    assert path(ingress, "spec.tls") == INGRESS_TLS["ingress"]["tls"]
    rules = path(ingress, "spec.rules")
    assert [r["host"] for r in rules] == ["hello.example.com", "api.example.com"]
    for rule in rules:
        assert path(rule, "http.paths") == [
            {
                "path": "/",
                "pathType": "Prefix",
                "backend": {"service": {"name": RUNNER, "port": {"name": "http"}}},
            }
        ]


def test_ingress_without_hosts_serves_any_host(helm: Helm) -> None:
    ingress = render(helm, {"ingress": {"enabled": True}}).one("Ingress")
    assert "ingressClassName" not in ingress["spec"] and "tls" not in ingress["spec"]
    (rule,) = path(ingress, "spec.rules")
    assert "host" not in rule
    assert path(rule, "http.paths.0.backend.service.name") == RUNNER


def test_httproute_sends_everything_to_the_runner_service(helm: Helm) -> None:
    route = render(helm, GATEWAY).one("HTTPRoute", RUNNER)
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert path(route, "spec.parentRefs") == GATEWAY["httpRoute"]["parentRefs"]
    assert path(route, "spec.hostnames") == ["hello.example.com"]
    assert path(route, "spec.rules") == [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [{"name": RUNNER, "port": 80}],
        }
    ]


def test_httproute_needs_parent_refs(helm: Helm) -> None:
    result = helm.template({"httpRoute": {"enabled": True}}, check=False)
    assert result.returncode != 0
    assert "httpRoute.parentRefs" in result.stderr


# --- scaling and network policy ------------------------------------------------------


def test_hpa_owns_the_replica_count(helm: Helm) -> None:
    rendered = render(helm, SCALING)
    assert "replicas" not in rendered.one("Deployment", RUNNER)["spec"]
    hpa = rendered.one("HorizontalPodAutoscaler", RUNNER)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert path(hpa, "spec.scaleTargetRef") == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": RUNNER,
    }
    assert (path(hpa, "spec.minReplicas"), path(hpa, "spec.maxReplicas")) == (3, 12)
    assert path(hpa, "spec.metrics") == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70},
            },
        }
    ]


def test_hpa_needs_a_target(helm: Helm) -> None:
    result = helm.template(
        {"runner": {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}}},
        check=False,
    )
    assert result.returncode != 0
    assert "targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" in result.stderr


def test_pdb_selects_the_runner_pods(helm: Helm) -> None:
    rendered = render(helm, SCALING)
    pdb = rendered.one("PodDisruptionBudget", RUNNER)
    assert path(pdb, "spec.maxUnavailable") == 1
    assert "minAvailable" not in pdb["spec"]
    assert path(pdb, "spec.selector.matchLabels") == path(
        rendered.one("Deployment", RUNNER), "spec.selector.matchLabels"
    )
    pdb = render(helm, {"runner": {"podDisruptionBudget": {"minAvailable": "50%"}}}).one(
        "PodDisruptionBudget"
    )
    assert path(pdb, "spec.minAvailable") == "50%"
    assert "maxUnavailable" not in pdb["spec"]
    assert not render(helm, {"runner": {"podDisruptionBudget": {"enabled": False}}}).has(
        "PodDisruptionBudget"
    )


def test_the_default_network_policy_keeps_the_admin_port_to_prometheus_and_the_node(
        helm: Helm) -> None:
    http, admin = path(render(helm).one("NetworkPolicy", RUNNER), "spec.ingress")
    assert "from" not in http  # the data port: any source
    assert admin["ports"] == [{"port": "admin", "protocol": "TCP"}]
    assert admin["from"] == [{"namespaceSelector": {}, "podSelector": {
        "matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
    node_only = render(helm, {"runner": {"networkPolicy": {"adminFrom": []}}})
    rules = path(node_only.one("NetworkPolicy", RUNNER), "spec.ingress")
    assert [rule["ports"][0]["port"] for rule in rules] == ["http"]


def test_network_policies(helm: Helm) -> None:
    rendered = render(helm, SCALING)
    runner = rendered.one("NetworkPolicy", RUNNER)
    assert path(runner, "spec.podSelector.matchLabels") == path(
        rendered.one("Deployment", RUNNER), "spec.selector.matchLabels"
    )
    assert path(runner, "spec.policyTypes") == ["Ingress"]  # egress left open by default
    http, admin = path(runner, "spec.ingress")
    assert http == {
        "ports": [{"port": "http", "protocol": "TCP"}],
        "from": SCALING["runner"]["networkPolicy"]["httpFrom"],
    }
    assert admin == {
        "ports": [{"port": "admin", "protocol": "TCP"}],
        "from": SCALING["runner"]["networkPolicy"]["adminFrom"],
    }
    operator = rendered.one("NetworkPolicy", OPERATOR)
    assert [rule["ports"][0]["port"] for rule in path(operator, "spec.ingress")] == [
        "metrics",
        "health",
    ]
    egress = [{"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": [{"port": 443}]}]
    runner = render(
        helm, {"runner": {"networkPolicy": {"enabled": True, "egress": egress}}}
    ).one("NetworkPolicy")
    assert path(runner, "spec.policyTypes") == ["Ingress", "Egress"]
    assert path(runner, "spec.egress") == egress


def test_topology_spread_constraints_get_the_runner_selector(helm: Helm) -> None:
    constraint = {
        "maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "ScheduleAnyway",
    }
    deployment = render(helm, {"runner": {"topologySpreadConstraints": [constraint]}}).one(
        "Deployment", RUNNER
    )
    (rendered,) = path(deployment, "spec.template.spec.topologySpreadConstraints")
    assert rendered == {
        **constraint,
        "labelSelector": {"matchLabels": path(deployment, "spec.selector.matchLabels")},
    }


# --- monitoring ------------------------------------------------------------------------


def test_service_monitors_scrape_the_admin_and_metrics_services(helm: Helm) -> None:
    rendered = render(helm, MONITORING)
    services = {s["metadata"]["name"]: s for s in rendered.all("Service")}
    for name, service_name, port in (
        (RUNNER, RUNNER_ADMIN, "admin"),
        (OPERATOR, OPERATOR_METRICS, "metrics"),
    ):
        monitor = rendered.one("ServiceMonitor", name)
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        selector = path(monitor, "spec.selector.matchLabels")
        selected = [
            n for n, s in services.items() if selector.items() <= s["metadata"]["labels"].items()
        ]
        assert selected == [service_name]
        assert path(monitor, "spec.endpoints") == [
            {"port": port, "path": "/metrics", "interval": "30s"}
        ]
        assert port in [p["name"] for p in services[service_name]["spec"]["ports"]]


def test_prometheus_rule_carries_files_alerts_yaml(helm: Helm) -> None:
    rule = render(helm, MONITORING).one("PrometheusRule")
    alerts = yaml.safe_load((CHART_DIR / "files" / "alerts.yaml").read_text())
    assert path(rule, "spec.groups") == alerts["groups"]
    assert rule["metadata"]["labels"]["release"] == "prometheus"


def test_grafana_dashboard_configmap_carries_files_dashboard_json(helm: Helm) -> None:
    configmap = render(helm, MONITORING).one("ConfigMap")
    assert configmap["metadata"]["namespace"] == "grafana"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    # Not a runner ConfigMap: the runners select on edgerunner.dev/kind.
    assert "edgerunner.dev/kind" not in configmap["metadata"]["labels"]
    dashboard = json.loads((CHART_DIR / "files" / "dashboard.json").read_text())
    assert json.loads(configmap["data"]["edge-runner.json"]) == dashboard


def test_monitoring_is_off_by_default(helm: Helm) -> None:
    rendered = render(helm)
    for kind in ("ServiceMonitor", "PrometheusRule", "ConfigMap", "HTTPRoute", "Ingress"):
        assert not rendered.has(kind), kind


# --- names, images, toggles --------------------------------------------------------------


def test_long_release_names_are_truncated_to_63(helm: Helm) -> None:
    release = "a-very-long-release-name-that-goes-on-and-on-for-ever-and-ever-x"[:53]
    rendered = render(helm, MONITORING | INGRESS_TLS | SCALING, release=release)
    for obj in rendered:
        if obj["kind"] in NAME_LIMITED_KINDS:
            name = obj["metadata"]["name"]
            assert len(name) <= 63 and not name.endswith("-"), name
    names = [o["metadata"]["name"] for o in rendered.all("Deployment")]
    assert len(set(names)) == 2 and all(n.endswith(("-runner", "-operator")) for n in names)


def test_fullname_override_and_release_containing_the_chart_name(helm: Helm) -> None:
    rendered = render(helm, {"fullnameOverride": "edge"})
    assert {d["metadata"]["name"] for d in rendered.all("Deployment")} == {
        "edge-runner",
        "edge-operator",
    }
    rendered = render(helm, release="my-edge-runner")
    assert {d["metadata"]["name"] for d in rendered.all("Deployment")} == {
        "my-edge-runner-runner",
        "my-edge-runner-operator",
    }


def test_image_tag_and_digest(helm: Helm) -> None:
    digest = "sha256:" + "ab" * 32
    rendered = render(
        helm,
        {
            "runner": {"image": {"repository": "registry.local/runner", "tag": "1.2.3"}},
            "operator": {"image": {"digest": digest, "pullPolicy": "Always"}},
            "imagePullSecrets": [{"name": "regcred"}],
        },
    )
    runner = rendered.one("Deployment", RUNNER)
    assert container(runner, "runner")["image"] == "registry.local/runner:1.2.3"
    operator = rendered.one("Deployment", OPERATOR)
    assert container(operator, "operator")["image"] == f"ghcr.io/edge-runner/operator@{digest}"
    assert container(operator, "operator")["imagePullPolicy"] == "Always"
    for deployment in (runner, operator):
        assert path(deployment, "spec.template.spec.imagePullSecrets") == [{"name": "regcred"}]


def test_runner_tuning_values_become_flags(helm: Helm) -> None:
    deployment = render(
        helm,
        {
            "runner": {
                "maxConcurrency": 16,
                "maxWaiting": 8,
                "maxWait": 0.5,
                "logFormat": "text",
                "extraArgs": ["--inline-fuel=0"],
                "extraEnv": [{"name": "EXTRA", "value": "1"}],
                "shutdown": {"drainDelaySeconds": 10, "graceSeconds": 50},
            }
        },
    ).one("Deployment", RUNNER)
    args = container(deployment, "runner")["args"]
    for flag in ("--max-concurrency=16", "--max-waiting=8", "--max-wait=0.5",
                 "--log-format=text", "--drain-delay=10", "--grace=50"):  # fmt: skip
        assert flag in args
    assert args[-1] == "--inline-fuel=0"
    assert env_of(deployment, "runner")["EXTRA"] == {"name": "EXTRA", "value": "1"}
    assert path(deployment, "spec.template.spec.terminationGracePeriodSeconds") == 65


def test_runner_only_and_operator_only_installs(helm: Helm) -> None:
    runner_only = render(helm, {"operator": {"enabled": False}})
    assert [d["metadata"]["name"] for d in runner_only.all("Deployment")] == [RUNNER]
    assert not runner_only.has("ClusterRole")
    operator_only = render(helm, {"runner": {"enabled": False}})
    assert [d["metadata"]["name"] for d in operator_only.all("Deployment")] == [OPERATOR]
    assert not operator_only.has("PodDisruptionBudget")
    result = helm.template(
        {"runner": {"enabled": False}, "ingress": {"enabled": True}}, check=False
    )
    assert result.returncode != 0 and "ingress.enabled needs runner.enabled" in result.stderr



# --- private registry CA ------------------------------------------------------------------

CA_DIR = "/etc/edge-runner/registry-ca"
CONTAINERS = {RUNNER: "runner", OPERATOR: "operator"}


def ca_parts(deployment: Manifest) -> tuple[Any, list[Any], list[Any]]:
    """SSL_CERT_FILE of the container, its mounts of the CA volume, the CA volumes."""
    name = CONTAINERS[deployment["metadata"]["name"]]
    env = env_of(deployment, name).get("SSL_CERT_FILE")
    mounts = [m for m in container(deployment, name)["volumeMounts"]
              if m["name"] == "registry-ca"]
    volumes = [v for v in path(deployment, "spec.template.spec.volumes")
               if v["name"] == "registry-ca"]
    return env, mounts, volumes


@pytest.mark.parametrize(("source", "volume"), [
    ({"configMap": "corp-ca"},
     {"configMap": {"name": "corp-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}),
    ({"secret": "corp-ca", "key": "bundle.pem"},
     {"secret": {"secretName": "corp-ca", "items": [{"key": "bundle.pem", "path": "ca.crt"}]}}),
])
def test_registry_ca_is_mounted_into_both_pods_and_named_by_ssl_cert_file(
        helm: Helm, source: dict[str, str], volume: dict[str, Any]) -> None:
    rendered = render(helm, {"registryCA": source})
    for name in (RUNNER, OPERATOR):
        env, mounts, volumes = ca_parts(rendered.one("Deployment", name))
        assert env == {"name": "SSL_CERT_FILE", "value": f"{CA_DIR}/ca.crt"}, name
        assert mounts == [{"name": "registry-ca", "mountPath": CA_DIR, "readOnly": True}], name
        assert volumes == [{"name": "registry-ca", **volume}], name
    assert helm.lint({"registryCA": source}).returncode == 0


def test_no_registry_ca_by_default(helm: Helm) -> None:
    rendered = render(helm)
    for name in (RUNNER, OPERATOR):
        assert ca_parts(rendered.one("Deployment", name)) == (None, [], []), name


def test_registry_ca_takes_a_configmap_or_a_secret_not_both(helm: Helm) -> None:
    result = helm.template({"registryCA": {"configMap": "a", "secret": "b"}}, check=False)
    assert result.returncode != 0
    assert "registryCA: set configMap or secret, not both" in result.stderr
