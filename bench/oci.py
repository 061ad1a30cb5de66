"""OCI sources: apply -> served on every runner, and registry bytes fetched per runner.

Starts the test harness's real API server (support.k8s), Debian's docker-registry
(anonymous, plain HTTP on loopback), the operator and ``--runners`` runner
processes.  For each size (hello-world, 67 KB; a generated 20 MiB module) it pushes
``--rounds`` distinct modules with oras, and for each applies an EdgeFunction with
``source.oci`` plus a route, timing until every runner answers 200 on the route.
Prints p50 and max per size, then each runner's
``edge_artifact_fetched_bytes_total{kind="oci"}`` next to the bytes pushed (equal:
each blob fetched once per runner).

    python bench/oci.py [--rounds 3] [--runners 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.guests import sized_wat  # noqa: E402
from support.k8s import Cluster  # noqa: E402
from support.objects import route_yaml  # noqa: E402
from support.operator import OperatorProcess  # noqa: E402
from support.registry import Registry  # noqa: E402
from support.runner import RunnerProcess, metric_value, wait_until  # noqa: E402
from support.wasm import distinct, wat_to_wasm  # noqa: E402

HELLO = ROOT / "functions/hello-world/hello_world.wasm"


def function(name: str, ref: str) -> str:
    return json.dumps({"apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeFunction",
                       "metadata": {"name": name}, "spec": {"source": {"oci": {"ref": ref}}}})


def deploy(cluster: Cluster, namespace: str, registry: Registry, runners: list[RunnerProcess],
           *, name: str, module: bytes) -> float:
    """Push ``module``, apply its function and route; seconds until every runner serves it."""
    registry.push(f"bench/{name}:v1", module)
    started = time.monotonic()
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=function(
        name, f"{registry.host}/bench/{name}:v1") + "\n---\n" + route_yaml(
        name, f"/{name}", name))
    wait_until(lambda: all(r.client.get(f"/{name}").status_code == 200 for r in runners),
               timeout=180, interval=0.05, what=f"{name} served")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runners", type=int, default=2)
    args = parser.parse_args()
    hello = HELLO.read_bytes()
    big = wat_to_wasm(sized_wat(b"big", 20 << 20))
    sizes = {"67 KB hello-world": hello, "20 MiB generated": big}
    work = Path(tempfile.mkdtemp(prefix="edge-bench-oci-"))
    with Cluster() as cluster, Registry(work / "registry") as registry:
        crds = str(ROOT / "crds")
        cluster.kubectl("apply", "--server-side", "-f", crds)
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", crds)
        namespace = "bench-oci"
        cluster.kubectl("create", "namespace", namespace)
        env = {**cluster.env(), "EDGE_OPERATOR_ALLOW_FETCH_FROM": "127.0.0.0/8",
               "EDGE_OPERATOR_INSECURE_REGISTRIES": registry.host}
        runners = [RunnerProcess(None, env=cluster.env(), extra_args=["--namespace", namespace])
                   for _ in range(args.runners)]
        pushed = 0
        with OperatorProcess(namespace, env):
            try:
                for runner in runners:
                    runner.start()
                for label, module in sizes.items():
                    times = []
                    for index in range(args.rounds):
                        variant = distinct(module, index)
                        pushed += len(variant)
                        name = f"{'big' if len(module) > 1 << 20 else 'small'}-{index}"
                        times.append(deploy(cluster, namespace, registry, runners,
                                            name=name, module=variant))
                    print(f"apply -> served on {args.runners} runners, {label}"
                          f" ({len(module):,} bytes), {args.rounds} rounds:"
                          f" p50 {statistics.median(times):.2f}s, max {max(times):.2f}s")
                for index, runner in enumerate(runners):
                    got = metric_value(runner.metrics(), "edge_artifact_fetched_bytes_total",
                                       {"kind": "oci"})
                    print(f"runner {index}: fetched {got:,.0f} bytes from the registry;"
                          f" blobs pushed: {pushed:,} bytes")
            finally:
                for runner in runners:
                    runner.stop()


if __name__ == "__main__":
    main()
