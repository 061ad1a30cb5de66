"""wasi-http benchmark: standard components next to the same kind of function on the edge ABI.

One runner serves the small hand-written WAT component and the componentize-py
component (abi: wasi-http, tests/components/) next to the ``constant`` and
``hello-world`` samples (abi: edge, functions/).  For each it prints the
executor's own time per request (in process, no HTTP: instantiate, handle,
collect; wall and CPU time), the per-request latency over HTTP on one connection (wrk -c1, p50)
and req/s with ``--connections`` connections.  Not a test; the figures depend on
the machine and on what else runs on it.

    python bench/wasihttp.py [--duration 5] [--connections 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from throughput import wrk  # noqa: E402

from edge_runner.abi.wasihttp import run_wasi_http  # noqa: E402
from edge_runner.wasm.engine import WasmEngine  # noqa: E402
from support import components  # noqa: E402
from support.guests import write_function  # noqa: E402
from support.inprocess import function_spec, http_request  # noqa: E402
from support.runner import RunnerProcess  # noqa: E402
from support.wasm import build_function  # noqa: E402


def in_process_us(wasm: bytes, requests: int) -> tuple[float, float]:
    """Microseconds per request of the wasi-http executor alone: wall and CPU time.

    CPU time (of the whole process, so the epoch ticker's share is in it) is the
    steadier figure on a busy machine, where wall time also counts waiting for a core.
    """
    engine = WasmEngine()
    try:
        compiled = engine.compile(wasm, "wasi-http")
        spec = function_spec(abi="wasi-http")
        request = http_request("/bench")
        for _ in range(20):  # warm-up: linker, primed types, caches
            run_wasi_http(engine=engine, compiled=compiled, name="bench", spec=spec,
                          request=request, request_id="b")
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(requests):
            run_wasi_http(engine=engine, compiled=compiled, name="bench", spec=spec,
                          request=request, request_id="b")
        return ((time.perf_counter() - started) / requests * 1e6,
                (time.process_time() - cpu) / requests * 1e6)
    finally:
        engine.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--requests", type=int, default=500, help="in-process requests")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 2
    guests = {"wat component": components.echo_component(),
              "componentize-py": components.py_component()}
    edge = {name: build_function(name) for name in ("constant", "hello-world")}
    rows: list[tuple[str, str, tuple[float, float] | None, dict[str, float],
                     dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths: dict[str, tuple[str, str]] = {}
        for index, (label, wasm) in enumerate(guests.items()):
            write_function(folder, f"c{index}", wasm, abi="wasi-http")
            paths[label] = ("wasi-http", f"/c{index}")
        for label, module in edge.items():
            write_function(folder, label, module.read_bytes(), abi="edge")
            paths[label] = ("edge", f"/{label}")
        cache = components.CACHE / "test-module-cache"
        cache.mkdir(parents=True, exist_ok=True)
        runner = RunnerProcess(folder, extra_args=["--log-level", "warning", "--cache-dir",
                                                   str(cache)])
        try:
            runner.start(wait_ready=False)
            runner.wait_ready(timeout=240.0)
            for label, (abi, path) in paths.items():
                url = f"{runner.url}{path}"
                assert runner.client.get(path).status_code == 200, label
                wrk(url, 1, args.connections)  # warm-up
                single = wrk(url, args.duration, 1)
                loaded = wrk(url, args.duration, args.connections)
                own = in_process_us(guests[label], args.requests) if label in guests else None
                rows.append((label, abi, own, single, loaded))
        finally:
            runner.stop()
    print(f"wrk -t1 -d{args.duration}s on loopback, {os.cpu_count()} cores (shared machine:"
          " compare rows of one run, not runs)")
    print(f"{'function':<18}{'abi':<11}{'executor us wall/cpu':>22}{'p50 ms c=1':>12}"
          f"{'req/s c=1':>11}{f'req/s c={args.connections}':>12}{'p99 ms':>9}{'non-2xx':>9}")
    for label, abi, own, single, loaded in rows:
        executor = f"{own[0]:.0f}/{own[1]:.0f}" if own is not None else "-"
        print(f"{label:<18}{abi:<11}{executor:>22}{single['p50'] * 1e3:>12.2f}"
              f"{single['rps']:>11.0f}{loaded['rps']:>12.0f}{loaded['p99'] * 1e3:>9.2f}"
              f"{single['errors'] + loaded['errors']:>9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
