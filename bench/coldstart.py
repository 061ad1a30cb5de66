"""Cold start of hello-world: compile (empty cache) vs disk cache vs warm, side by side.

Each row is one way a request can find its function, measured N times with the
runner's own engine, executor code and real module (built from source):

* compile   - no compiled code anywhere: compile + instantiate + first call
* disk      - compiled artifact on disk (a restarted runner): load + instantiate + call
* instance  - compiled module in memory, no hot instance: instantiate + call
* warm      - a hot instance (pool.reuse): the call alone

and, over HTTP against a real runner process, the time to first byte of a
request that has to create its instance vs one served by a hot instance.
Not a test: ``python bench/coldstart.py [--runs 200]``.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from edge_api.models import EdgeFunctionSpec  # noqa: E402
from edge_runner.abi.edge import EdgeInstance  # noqa: E402
from edge_runner.abi.envelope import encode_request  # noqa: E402
from edge_runner.wasm.engine import WasmEngine  # noqa: E402
from edge_runner.wasm.modcache import DiskCache  # noqa: E402
from support.guests import write_function  # noqa: E402
from support.runner import RunnerProcess  # noqa: E402
from support.wasm import build_function  # noqa: E402

REQUEST = encode_request(b"GET", b"/hello", b"name=Ada", [], [(b"host", b"x")], b"")


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def measure(runs: int, step: Callable[[], object]) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        step()
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


def in_process(wasm: bytes, runs: int) -> dict[str, tuple[float, float]]:
    engine = WasmEngine()
    spec = EdgeFunctionSpec.model_validate({"source": {"path": "x"}})
    digest = hashlib.sha256(wasm).hexdigest()
    cache = DiskCache(Path(tempfile.mkdtemp(prefix="edge-bench-")), engine.fingerprint)
    compiled = engine.compile(wasm, "edge")
    cache.store(digest, bytes(compiled.module.serialize()))

    def first_call(module: object) -> None:
        instance = EdgeInstance(engine, module, "hello", spec)  # type: ignore[arg-type]
        assert instance.invoke(REQUEST, "r")[0] == 200
        instance.close()

    hot = EdgeInstance(engine, compiled, "hello", spec)
    rows = {
        "compile": measure(max(5, runs // 20),
                           lambda: first_call(engine.compile(wasm, "edge"))),
        "disk": measure(runs, lambda: first_call(engine.load_artifact(
            cache.load(digest) or b"", digest=digest, size=len(wasm), abi="edge"))),
        "instance": measure(runs, lambda: first_call(compiled)),
        "warm": measure(runs, lambda: hot.invoke(REQUEST, "r")),
    }
    engine.close()
    return rows


def over_http(wasm: bytes, runs: int) -> dict[str, tuple[float, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_function(folder, "cold", wasm, path="/cold", path_type="Prefix",
                       pool={"reuse": False})
        write_function(folder, "warm", wasm, path="/warm", path_type="Prefix")
        with RunnerProcess(folder, extra_args=["--log-level", "warning"]) as runner:
            client = runner.client
            client.get("/warm")
            rows = {}
            for name in ("cold", "warm"):
                samples = []
                for _ in range(runs):
                    started = time.perf_counter()
                    with client.stream("GET", f"/{name}", params={"name": "Ada"}) as response:
                        next(response.iter_raw())
                        samples.append(time.perf_counter() - started)
                rows[f"HTTP TTFB, {'new instance' if name == 'cold' else 'hot instance'}"] = \
                    percentiles(samples)
            return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    wasm = build_function("hello-world").read_bytes()
    rows = in_process(wasm, args.runs) | over_http(wasm, args.runs)
    print(f"hello-world ({len(wasm)} bytes), {args.runs} runs (compile: fewer)")
    print(f"{'path':<28}{'p50 ms':>10}{'p99 ms':>10}")
    for name, (p50, p99) in rows.items():
        print(f"{name:<28}{p50 * 1e3:>10.3f}{p99 * 1e3:>10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
