"""The control plane at N functions (default 1,000): operator CPU at rest, apply -> served.

On a real kube-apiserver + etcd (tests/support/k8s.py, binaries cached in
~/.cache/edge-runner): N EdgeFunctions (distinct inline constant modules) and N
EdgeRoutes are applied, the operator and one runner (cluster mode) start, and
once the runner serves every route the bench measures

* the operator's CPU seconds (user + system, from /proc) over ``--rest``
  seconds with nothing changing: at least one full resync (every 60 s) is in
  the window by default.  The window opens once the operator has settled
  (every function's rollout counted, no status or ConfigMap written for
  ``SETTLED_SECONDS``), so it does not include the tail of the initial
  reconciles; the time that took is the "settled s" column;
* apply -> served: ``--applies`` times, one more EdgeFunction and EdgeRoute
  applied with one kubectl apply, timed from just before kubectl starts until the
  runner first answers on the new route with the new function's body (polled
  every 10 ms, 60 s deadline).  The operator's part of it, apply -> handed off
  (both objects' ``status.handoff`` written, as a watch of each kind in this
  process sees it), is reported too; the rest is the runner's;
* the status writes after the bulk apply: how long the operator kept writing
  once every route was served ("settled s", including the ``SETTLED_SECONDS``
  without a write that end it) and how many writes that was;

next to the same figures with 1 function present (the baseline), same run.
The operator and runner run as the cluster admin.  Not a test.

    python bench/control_plane.py [--functions 1000] [--rest 65] [--applies 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
from lightkube import Client, KubeConfig  # noqa: E402

from edge_api.k8s import EdgeFunctionResource, EdgeRouteResource  # noqa: E402
from support.guests import constant_wat  # noqa: E402
from support.k8s import Cluster  # noqa: E402
from support.objects import function_yaml, route_yaml  # noqa: E402
from support.operator import OperatorProcess  # noqa: E402
from support.runner import RunnerProcess, wait_until  # noqa: E402
from support.wasm import wat_to_wasm  # noqa: E402

CRDS = ROOT / "crds"
BATCH = 200
#: The operator has settled when its writes counter stayed the same this long.
SETTLED_SECONDS = 5.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def manifests(names: range, prefix: str) -> list[str]:
    return [function_yaml(f"{prefix}{i}", wat_to_wasm(constant_wat(f"ok {prefix}{i}".encode())))
            + "---\n" + route_yaml(f"{prefix}{i}", f"/{prefix}{i}", f"{prefix}{i}")
            for i in names]


def apply(cluster: Cluster, namespace: str, documents: list[str]) -> None:
    for start in range(0, len(documents), BATCH):
        cluster.kubectl("apply", "-n", namespace, "-f", "-",
                        input="---\n".join(documents[start:start + BATCH]))


def writes(operator: OperatorProcess) -> float:
    """The sum of edge_operator_writes_total over its labels."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in operator.metrics().splitlines()
               if line.startswith("edge_operator_writes_total{"))


def settled(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    """Wait until every function's rollout is counted and the operator stopped writing."""
    def counted() -> bool:
        out = cluster.kubectl("get", "ef", "-n", namespace, "-o",
                              "jsonpath={.items[*].status.runners}").stdout.split()
        return len(out) > 0 and all(value == "1/1" for value in out)

    wait_until(counted, timeout=1800, interval=1, what="every rollout counted")
    last = [writes(operator), time.monotonic()]

    def quiet() -> bool:
        now = writes(operator)
        if now != last[0]:
            last[:] = [now, time.monotonic()]
        return time.monotonic() - last[1] >= SETTLED_SECONDS

    wait_until(quiet, timeout=1800, interval=0.5, what="the operator settled")


class Handoffs:
    """When each EdgeFunction's and EdgeRoute's ``status.handoff`` first appeared (a
    watch per kind, in threads, for as long as the cluster is up)."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        for kind, resource in (("ef", EdgeFunctionResource), ("er", EdgeRouteResource)):
            threading.Thread(target=self._watch, args=(kubeconfig, namespace, kind, resource),
                             daemon=True).start()

    def _watch(self, kubeconfig: Path, namespace: str, kind: str, resource: Any) -> None:
        client = Client(KubeConfig.from_file(kubeconfig), namespace=namespace)
        try:
            for _event, obj in client.watch(resource, namespace=namespace):
                body = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
                if (body.get("status") or {}).get("handoff"):
                    with self._lock:
                        self.seen.setdefault((kind, body["metadata"]["name"]), time.monotonic())
        except Exception:  # the cluster is stopped at the end of the bench
            return

    def handed_off(self, name: str) -> float | None:
        """When both the function and the route ``name`` were handed off (None: not yet)."""
        with self._lock:
            times = [self.seen.get((kind, name)) for kind in ("ef", "er")]
        return None if None in times else max(t for t in times if t is not None)


def serves(client: httpx.Client, name: str) -> bool:
    response = client.get(f"/{name}")
    return response.status_code == 200 and response.text == f"ok {name}"


def measure(cluster: Cluster, functions: int, args: argparse.Namespace) -> dict[str, float]:
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    started = time.monotonic()
    apply(cluster, namespace, manifests(range(functions), "f"))
    env = cluster.env()
    runner = RunnerProcess(None, extra_args=["--namespace", namespace, "--log-level",
                                             "warning"], env=env)
    with OperatorProcess(namespace, env) as operator:
        runner.start(wait_ready=False)
        try:
            runner.wait_ready(timeout=1800)
            step = max(1, functions // 20)
            wait_until(lambda: all(serves(runner.client, f"f{i}")
                                   for i in range(functions - 1, -1, -step)),
                       timeout=1800, what="every function served")
            ready = time.monotonic() - started
            written = writes(operator)
            settled(cluster, namespace, operator)
            settle = time.monotonic() - started - ready
            written = writes(operator) - written
            assert operator.process is not None
            before = cpu_seconds(operator.process.pid)
            time.sleep(args.rest)  # at rest: nothing changes; the resync runs meanwhile
            at_rest = (cpu_seconds(operator.process.pid) - before) * 60 / args.rest
            handoffs = Handoffs(cluster.kubeconfig, namespace)
            latencies, handed = [], []
            for i in range(args.applies):
                [document] = manifests(range(i, i + 1), "new")
                applied = time.monotonic()
                cluster.kubectl("apply", "-n", namespace, "-f", "-", input=document)
                wait_until(lambda i=i: serves(runner.client, f"new{i}"),  # type: ignore[misc]
                           timeout=60, interval=0.01, what="the new function served")
                latencies.append(time.monotonic() - applied)
                # The watch may report the hand-off after the runner served (it is a client too).
                handoff = wait_until(lambda i=i: handoffs.handed_off(f"new{i}"),  # type: ignore[misc]
                                     timeout=10, what="the hand-off seen")
                handed.append(handoff - applied)
        finally:
            runner.stop()
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    return {"ready": ready, "settle": settle, "writes": written, "cpu": at_rest,
            "handoff": statistics.median(handed), "p50": statistics.median(latencies),
            "max": max(latencies)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", type=int, default=1000)
    parser.add_argument("--rest", type=float, default=65.0,
                        help="seconds at rest to measure CPU over (the resync is every 60 s)")
    parser.add_argument("--applies", type=int, default=7)
    args = parser.parse_args()
    with Cluster() as cluster:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
        names = cluster.kubectl("get", "-f", str(CRDS), "-o", "name").stdout.split()
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
        rows = {"1 function": measure(cluster, 1, args),
                f"{args.functions} functions": measure(cluster, args.functions, args)}
    print(f"real kube-apiserver + etcd on loopback, {os.cpu_count()} cores;"
          f" at rest {args.rest:.0f} s, {args.applies} applies")
    print(f"{'namespace':<16}{'all served s':>13}{'settled s':>10}{'writes':>7}"
          f"{'operator CPU s/min':>20}{'apply->handoff p50 s':>22}{'apply->served p50 s':>21}"
          f"{'max s':>7}")
    for name, r in rows.items():
        print(f"{name:<16}{r['ready']:>13.1f}{r['settle']:>10.1f}{r['writes']:>7.0f}"
              f"{r['cpu']:>20.2f}{r['handoff']:>22.2f}{r['p50']:>21.2f}{r['max']:>7.2f}")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
