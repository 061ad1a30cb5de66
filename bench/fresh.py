"""The wasm side of one request, fresh instance vs hot instance, this tree vs another.

In process, with the runner's own engine and executor and a real function
(``functions/constant`` unless ``--function``), each round measures N times:

* create  - ``EdgeInstance(...)``: store, WASI, instantiation, exports, ``_initialize``
* first   - its first call (the guest's first ``edge_alloc`` may grow memory)
* close   - deleting the instance (its store and memory)
* fresh   - the three together: what ``pool.reuse: false`` costs a request
* hot     - a call on a hot instance plus ``memory_bytes()`` (what the pool does with
  a reused instance per request)
* renewed - a call on a renewed instance, then renewing it (what ``pool.reuse: false``
  costs a request when the module allows renewal, docs/abi.md); ``nan`` for a tree
  without renewal

Times are the CPU time of the measuring thread (``thread_time``), so other
processes on a busy machine add little noise.  ``--base REV`` runs the same
rounds on the runner at git revision REV (extracted with ``git archive``) in a
second process, alternating rounds between the two; the medians of the rounds
are printed side by side.
Not a test: ``python bench/fresh.py --base main [--function hello-world] [--rounds 15]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("create", "first", "close", "fresh", "hot", "renewed")
REQUEST_PATH = b"/bench"


def worker(wasm_path: str) -> None:
    """Serve rounds: read N from stdin, print one JSON line of microseconds per step."""
    from edge_api.models import EdgeFunctionSpec
    from edge_runner.abi.edge import EdgeInstance
    from edge_runner.abi.envelope import encode_request
    from edge_runner.wasm.engine import WasmEngine

    engine = WasmEngine()
    compiled = engine.compile(Path(wasm_path).read_bytes(), "edge")
    spec = EdgeFunctionSpec.model_validate(
        {"source": {"path": "x"}, "env": [{"name": "GREETING", "value": "hello"}]})
    request = encode_request(b"GET", REQUEST_PATH, b"", [], [(b"host", b"bench")], b"")
    hot = EdgeInstance(engine, compiled, "bench", spec)
    try:
        renewing: EdgeInstance | None = EdgeInstance(
            engine, compiled, "bench", spec, renew=True)
    except TypeError:  # a tree before renewal
        renewing = None
    clock = time.thread_time_ns  # CPU time of this thread: other processes add no noise
    for line in sys.stdin:
        runs = int(line)
        totals = dict.fromkeys(STEPS, 0)
        for _ in range(runs):
            started = clock()
            instance = EdgeInstance(engine, compiled, "bench", spec)
            created = clock()
            status = instance.invoke(request, "r")[0]
            called = clock()
            instance.close()
            closed = clock()
            hot.invoke(request, "r")
            hot.memory_bytes()
            done = clock()
            if renewing is not None:
                assert renewing.invoke(request, "r")[0] == 200
                assert renewing.renew()
            renewed = clock()
            assert status == 200, status
            totals["create"] += created - started
            totals["first"] += called - created
            totals["close"] += closed - called
            totals["fresh"] += closed - started
            totals["hot"] += done - closed
            totals["renewed"] += renewed - done
        result = {k: v / runs / 1000 for k, v in totals.items()}
        if renewing is None:
            result["renewed"] = float("nan")
        print(json.dumps(result), flush=True)
    engine.close()


def _tree_at(revision: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "runner", "api"],
                             check=True, capture_output=True).stdout
    with tempfile.TemporaryFile() as raw:
        raw.write(archive)
        raw.seek(0)
        with tarfile.open(fileobj=raw) as tar:
            tar.extractall(into, filter="data")
    return into


def _spawn(tree: Path, wasm: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=f"{tree / 'runner'}{os.pathsep}{tree / 'api'}")
    return subprocess.Popen([sys.executable, __file__, "--worker", str(wasm)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _round(process: subprocess.Popen[str], runs: int) -> dict[str, float]:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(f"{runs}\n")
    process.stdin.flush()
    line = process.stdout.readline()
    if not line:
        raise SystemExit(f"worker exited with {process.wait()}")
    return dict(json.loads(line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--function", default="constant")
    parser.add_argument("--base", help="git revision to compare with (e.g. main)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--n", type=int, default=2000, help="iterations per round")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from support.wasm import build_function

    wasm = build_function(args.function)
    with tempfile.TemporaryDirectory(prefix="edge-bench-fresh-") as scratch:
        trees = {"this tree": ROOT}
        if args.base:
            trees[args.base] = _tree_at(args.base, Path(scratch))
        workers = {label: _spawn(tree, wasm) for label, tree in trees.items()}
        rounds: dict[str, list[dict[str, float]]] = {label: [] for label in trees}
        try:
            for _ in range(args.rounds):
                for label, process in workers.items():
                    rounds[label].append(_round(process, args.n))
        finally:
            for process in workers.values():
                assert process.stdin is not None
                process.stdin.close()
                process.wait()
    print(f"{args.function}: median over {args.rounds} rounds of {args.n}, us per step")
    print(f"{'step':8s}" + "".join(f"{label:>14s}" for label in trees))
    for step in STEPS:
        medians = [statistics.median(r[step] for r in rounds[label]) for label in trees]
        print(f"{step:8s}" + "".join(f"{m:14.1f}" for m in medians))


if __name__ == "__main__":
    main()
