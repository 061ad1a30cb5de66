"""The chart's own ServiceAccounts and RBAC for runners and operators started by tests.

Sits in tests/support/ (imported as ``support.identities``). In a cluster the runner
and the operator authenticate as the ServiceAccounts of charts/edge-runner and may
do only what its Roles and ClusterRoles allow. :class:`ChartIdentities` gives the
test processes exactly that:

* ``helm template`` renders the chart for the test's namespace (the release
  namespace, so the operator's Role is there: ``operator.watchNamespaces``
  defaults to it), and every ServiceAccount, Role, RoleBinding, ClusterRole and
  ClusterRoleBinding it renders is applied as it is;
* a token of each ServiceAccount is minted with the TokenRequest API
  (``kubectl create token``) and written into a kubeconfig of its own (the
  admin kubeconfig's cluster entry, a token user);
* :meth:`runner_env` / :meth:`operator_env` are the environments to start
  :class:`support.runner.RunnerProcess` / :class:`support.operator.OperatorProcess`
  with;
* with ``known_gaps`` (the default) the operator also gets :data:`KNOWN_GAPS`: what
  it needs today that the chart does not grant; each entry names the test that
  fails without it (marked ``xfail(strict=True)`` until the product is fixed);
* :meth:`forbidden` reads the API server's audit log (``Cluster.audit_log``) for
  requests of these accounts that were refused (403), so a permission the chart
  lacks fails the test even where the process only logs a warning and carries on.

:meth:`remove` deletes the cluster-scoped objects (the namespaced ones go with the
namespace).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from support.audit import read_events
from support.helm import Helm, Manifest
from support.k8s import Cluster

RELEASE = "edge"
RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
CLUSTER_SCOPED = ("ClusterRole", "ClusterRoleBinding")
TOKEN_DURATION = "2h"
#: Rules the operator needs that the chart does not grant, with the test that shows it.
#: kopf lists and watches namespaces cluster-wide unless its namespace scanning is
#: disabled; refused, it retries the list for about a minute before it falls back to
#: the namespaces it was given, so an operator with only the chart's RBAC starts
#: reconciling a minute late (tests/k8s/test_chart_rbac.py::
#: test_the_operator_needs_nothing_the_chart_does_not_grant).
KNOWN_GAPS: dict[str, list[dict[str, Any]]] = {}


@dataclass(frozen=True)
class Refusal:
    """One request the API server refused (403) to one of the chart's accounts."""

    user: str
    verb: str
    #: ``resource.group`` (``configmaps`` for the core group).
    resource: str
    subresource: str
    namespace: str
    name: str

    def __str__(self) -> str:
        sub = f"/{self.subresource}" if self.subresource else ""
        where = f" in {self.namespace}" if self.namespace else " (cluster scope)"
        name = f" {self.name}" if self.name else ""
        return f"{self.user.rsplit(':', 1)[-1]}: {self.verb} {self.resource}{sub}{name}{where}"


@dataclass
class ChartIdentities:
    cluster: Cluster
    helm: Helm
    namespace: str
    directory: Path
    values: dict[str, Any] = field(default_factory=dict)
    known_gaps: bool = True
    objects: list[Manifest] = field(default_factory=list)
    extra: list[Manifest] = field(default_factory=list)
    kubeconfigs: dict[str, Path] = field(default_factory=dict)
    _audit_offset: int = 0

    def install(self) -> ChartIdentities:
        rendered = self.helm.render(self.values, release=RELEASE, namespace=self.namespace)
        self.objects = [obj for obj in rendered if obj["kind"] in RBAC_KINDS]
        accounts = [obj for obj in self.objects if obj["kind"] == "ServiceAccount"]
        components = {obj["metadata"]["labels"]["app.kubernetes.io/component"]
                      for obj in accounts}
        assert components == {"runner", "operator"}, accounts
        if self.known_gaps:
            self.extra = [obj for component, rules in KNOWN_GAPS.items()
                          for obj in self._grant(component, rules, accounts)]
        log = self.cluster.audit_log
        self._audit_offset = log.stat().st_size if log is not None and log.exists() else 0
        self.cluster.kubectl(
            "apply", "-n", self.namespace, "-f", "-",
            input="\n---\n".join(yaml.safe_dump(o) for o in [*self.objects, *self.extra]))
        self.directory.mkdir(parents=True, exist_ok=True)
        for account in accounts:
            component = account["metadata"]["labels"]["app.kubernetes.io/component"]
            name = account["metadata"]["name"]
            token = self.cluster.kubectl(
                "create", "token", name, "-n", self.namespace, f"--duration={TOKEN_DURATION}"
            ).stdout.strip()
            path = self.directory / f"{component}.kubeconfig"
            path.write_text(yaml.safe_dump(self._kubeconfig(name, token)))
            path.chmod(0o600)
            self.kubeconfigs[component] = path
        return self

    def _grant(self, component: str, rules: list[dict[str, Any]], accounts: list[Manifest]
               ) -> list[Manifest]:
        """A ClusterRole with ``rules`` bound to the ServiceAccount of ``component``."""
        [account] = [a for a in accounts
                     if a["metadata"]["labels"]["app.kubernetes.io/component"] == component]
        name = f"{self.namespace}:test-known-gaps-{component}"
        return [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": name}, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": name},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": name},
             "subjects": [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                           "namespace": self.namespace}]},
        ]

    def account(self, component: str) -> str:
        """``system:serviceaccount:<namespace>:<name>`` of ``runner`` or ``operator``."""
        for obj in self.objects:
            if obj["kind"] == "ServiceAccount" and \
                    obj["metadata"]["labels"]["app.kubernetes.io/component"] == component:
                return f"system:serviceaccount:{self.namespace}:{obj['metadata']['name']}"
        raise KeyError(component)

    def _kubeconfig(self, account: str, token: str) -> dict[str, Any]:
        """The admin kubeconfig's current cluster, with a token user instead."""
        admin = yaml.safe_load(self.cluster.kubeconfig.read_text())
        contexts = {c["name"]: c["context"] for c in admin.get("contexts") or []}
        current = contexts[admin["current-context"]]
        clusters = {c["name"]: c["cluster"] for c in admin.get("clusters") or []}
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": account,
            "clusters": [{"name": "test", "cluster": clusters[current["cluster"]]}],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": account, "context": {
                "cluster": "test", "user": account, "namespace": self.namespace}}],
        }

    def env(self, component: str, **extra: str) -> dict[str, str]:
        """The cluster's environment with this component's kubeconfig only."""
        return {**self.cluster.env(), "KUBECONFIG": str(self.kubeconfigs[component]), **extra}

    def runner_env(self, **extra: str) -> dict[str, str]:
        return self.env("runner", **extra)

    def operator_env(self, **extra: str) -> dict[str, str]:
        return self.env("operator", **extra)

    def forbidden(self) -> list[Refusal]:
        """Requests of these accounts refused since :meth:`install` that RBAC still
        refuses (empty without an audit log, i.e. on an existing cluster).

        Each refusal in the audit log is asked again as a SubjectAccessReview
        (``kubectl auth can-i --as``): right after an API server (re)start its RBAC
        authorizer refuses everything until its caches are filled, which says nothing
        about the chart.
        """
        log = self.cluster.audit_log
        if log is None or not log.exists():
            return []
        users = {self.account("runner"), self.account("operator")}
        refused: set[Refusal] = set()
        for event in read_events(log, self._audit_offset):
            user = event.get("user", {}).get("username", "")
            if user in users and (event.get("responseStatus") or {}).get("code") == 403:
                ref = event.get("objectRef") or {}
                resource = ref.get("resource", "")
                if ref.get("apiGroup"):
                    resource += "." + ref["apiGroup"]
                refused.add(Refusal(user, event.get("verb", ""), resource,
                                    ref.get("subresource", ""), ref.get("namespace", ""),
                                    ref.get("name", "")))
        return sorted((r for r in refused if not self._allowed(r)), key=str)

    def _allowed(self, refusal: Refusal) -> bool:
        args = ["auth", "can-i", refusal.verb, refusal.resource, f"--as={refusal.user}"]
        if refusal.name:
            args[3] += f"/{refusal.name}"
        if refusal.subresource:
            args.append(f"--subresource={refusal.subresource}")
        args += ["-n", refusal.namespace] if refusal.namespace else ["--all-namespaces"]
        return self.cluster.kubectl(*args, check=False).stdout.strip() == "yes"

    def remove(self) -> None:
        for obj in [*self.objects, *self.extra]:
            if obj["kind"] in CLUSTER_SCOPED:
                self.cluster.kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"],
                                     "--ignore-not-found", "--wait=false", check=False)


__all__ = ["KNOWN_GAPS", "ChartIdentities", "Refusal"]
