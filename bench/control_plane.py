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
  applied with kubectl, timed until the runner answers on the new route;

next to the same figures with 1 function present (the baseline), same run.
The operator and runner run as the cluster admin.  Not a test.

    python bench/control_plane.py [--functions 1000] [--rest 65] [--applies 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402

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
            settled(cluster, namespace, operator)
            settle = time.monotonic() - started - ready
            assert operator.process is not None
            before = cpu_seconds(operator.process.pid)
            time.sleep(args.rest)  # at rest: nothing changes; the resync runs meanwhile
            at_rest = (cpu_seconds(operator.process.pid) - before) * 60 / args.rest
            latencies = []
            for i in range(args.applies):
                [document] = manifests(range(i, i + 1), "new")
                applied = time.monotonic()
                cluster.kubectl("apply", "-n", namespace, "-f", "-", input=document)
                wait_until(lambda i=i: serves(runner.client, f"new{i}"),  # type: ignore[misc]
                           timeout=60, interval=0.01, what="the new function served")
                latencies.append(time.monotonic() - applied)
        finally:
            runner.stop()
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    return {"ready": ready, "settle": settle, "cpu": at_rest, "p50": statistics.median(latencies),
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
    print(f"{'namespace':<16}{'all served s':>13}{'settled s':>10}{'operator CPU s/min':>20}"
          f"{'apply->served p50 s':>21}{'max s':>7}")
    for name, r in rows.items():
        print(f"{name:<16}{r['ready']:>13.1f}{r['settle']:>10.1f}{r['cpu']:>20.2f}"
              f"{r['p50']:>21.2f}{r['max']:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
