"""Routing at scale: one runner with 1 route vs the same runner with 10,000 routes, one run.

Every route has a Prefix rule ``/p<i>`` and a Template rule ``/t<i>/{id}`` to
the ``constant`` function (built from source).  The 1-route setup has only the
last route of the big one, so both serve the same URLs.  For each setup the
bench prints how long the route folder takes to load and index in process
(YAML + models + route table), how long the runner takes from start to ready,
and wrk's req/s and p99 for a Prefix match, a Template match and an unmatched
path (404), with the ratio of 10,000 to 1.  Not a test.

    python bench/routes.py [--routes 10000] [--duration 5] [--connections 16]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from throughput import wrk  # noqa: E402

from edge_api.routing import build_table  # noqa: E402
from edge_runner.sources.manifests import load_folder  # noqa: E402
from support.runner import RunnerProcess  # noqa: E402
from support.wasm import build_function  # noqa: E402

API = "edgerunner.dev/v1alpha1"


def write_folder(folder: Path, module: Path, indexes: range) -> None:
    folder.mkdir()
    shutil.copy(module, folder / "constant.wasm")
    documents: list[dict[str, object]] = [{
        "apiVersion": API, "kind": "EdgeFunction", "metadata": {"name": "constant"},
        "spec": {"source": {"path": "constant.wasm"}}}]
    documents += [{
        "apiVersion": API, "kind": "EdgeRoute", "metadata": {"name": f"r{i}"},
        "spec": {"rules": [
            {"match": {"path": f"/p{i}", "pathType": "Prefix"}, "function": "constant"},
            {"match": {"path": f"/t{i}/{{id}}", "pathType": "Template"},
             "function": "constant"}]},
    } for i in indexes]
    (folder / "routes.yaml").write_text(yaml.safe_dump_all(documents))


def measure(folder: Path, last: int, args: argparse.Namespace) -> dict[str, object]:
    started = time.perf_counter()
    state = load_folder(folder)
    table = build_table(state.routes)
    loaded = time.perf_counter() - started
    assert len(table.rules) == 2 * len(state.routes), table.conflicts[:3]
    started = time.perf_counter()
    with RunnerProcess(folder, extra_args=args.runner_args) as runner:
        ready = time.perf_counter() - started
        targets = {"Prefix": f"/p{last}/x", "Template": f"/t{last}/42", "unmatched": "/nothing/x"}
        assert runner.client.get(targets["Prefix"]).text == "ok"
        assert runner.client.get(targets["Template"]).text == "ok"
        assert runner.client.get(targets["unmatched"]).status_code == 404
        results: dict[str, object] = {"load": loaded, "ready": ready}
        for kind, path in targets.items():
            wrk(runner.url + path, 1, args.connections)  # warm-up
            results[kind] = wrk(runner.url + path, args.duration, args.connections)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("runner_args", nargs="*", default=["--log-level", "warning"],
                        help="`edge-runner serve` options (default: --log-level warning)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 2
    module = build_function("constant")
    last = args.routes - 1
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, indexes in (("1 route", range(last, args.routes)),
                               (f"{args.routes} routes", range(args.routes))):
            folder = Path(tmp) / label.replace(" ", "-")
            write_folder(folder, module, indexes)
            results[label] = measure(folder, last, args)
    print(f"wrk -t1 -c{args.connections} -d{args.duration}s on loopback, {os.cpu_count()} cores;"
          f" runner {' '.join(args.runner_args)}")
    print(f"{'setup':<14}{'load+index s':>13}{'start->ready s':>15}")
    for label, r in results.items():
        print(f"{label:<14}{r['load']:>13.2f}{r['ready']:>15.2f}")
    print(f"{'path':<11}{'setup':<14}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>7}")
    one = results["1 route"]
    for kind in ("Prefix", "Template", "unmatched"):
        base = one[kind]
        for label, r in results.items():
            w = r[kind]
            assert isinstance(w, dict) and isinstance(base, dict)
            print(f"{kind:<11}{label:<14}{w['rps']:>9.0f}{w['p50'] * 1e3:>9.2f}"
                  f"{w['p99'] * 1e3:>9.2f}{w['rps'] / base['rps']:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
