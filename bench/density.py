"""Density: one runner, N distinct functions (default 1,000), called round-robin.

Every function is hello-world with a distinct custom section (so N distinct
modules and digests, compiled once into the disk cache).  wrk (Debian's) drives
requests cycling over all N routes; the bench prints the runner's resident
memory (now and peak), p50/p99, the share of requests served by a hot instance
and the compiled-module cache results, next to the same runner serving one
function with the same load generator (the baseline).

    python bench/density.py [--functions 1000] [--duration 15]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.guests import write_function  # noqa: E402
from support.runner import RunnerProcess, metric_value  # noqa: E402
from support.wasm import build_function, distinct  # noqa: E402

LUA = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/f" .. (counter % {n}) .. "?name=Ada")
end
"""


def rss(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    now = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    peak = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return now * 1024, peak * 1024


def load(runner: RunnerProcess, functions: int, duration: int, script: Path) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", "-c8", f"-d{duration}s", "--latency", "-s", str(script), runner.url],
        check=True, capture_output=True, text=True,
    ).stdout
    unit = {"us": 1e-6, "ms": 1e-3, "s": 1.0}

    def latency(pct: str) -> float:
        value, suffix = re.search(rf"^\s+{pct}%\s+([0-9.]+)(us|ms|s)", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * unit[suffix]

    text = runner.metrics()
    requests = sum(metric_value(text, "edge_requests_total", {"function": f"f{i}", "code": "200"})
                   for i in range(functions))
    cold = sum(metric_value(text, "edge_cold_starts_total", {"function": f"f{i}"})
               for i in range(functions))
    assert runner.process is not None
    now, peak = rss(runner.process.pid)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": latency("50"), "p99": latency("99"),
        "hot": 1 - cold / requests if requests else 0.0,
        "rss": now, "peak": peak,
        "disk_hit": metric_value(text, "edge_module_cache_requests_total", {"result": "disk_hit"}),
        "miss": metric_value(text, "edge_module_cache_requests_total", {"result": "miss"}),
    }


def run(functions: int, duration: int, wasm: bytes, cache: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(functions):
            write_function(folder, f"f{i}", distinct(wasm, i), path=f"/f{i}",
                           path_type="Prefix")
        script = folder / "round-robin.lua"
        script.write_text(LUA.format(n=functions))
        started = time.monotonic()
        runner = RunnerProcess(folder, extra_args=["--cache-dir", str(cache), "--log-level",
                                                   "warning"])
        try:
            runner.start(wait_ready=False)
            runner.wait_ready(timeout=1800)
            ready = time.monotonic() - started
            result = load(runner, functions, duration, script)
        finally:
            runner.stop()
        result["ready"] = ready
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=15)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 2
    wasm = build_function("hello-world").read_bytes()
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = Path(cache_dir)
        rows = {
            "1 function": run(1, args.duration, wasm, cache),
            f"{args.functions} functions, empty cache": run(args.functions, 2, wasm, cache),
            f"{args.functions} functions, disk cache": run(args.functions, args.duration, wasm,
                                                           cache),
        }
    print("wrk -t1 -c8 round-robin over every function's route; hello-world x N")
    print(f"{'runner':<30}{'ready s':>9}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'hot %':>7}"
          f"{'RSS MiB':>9}{'peak MiB':>9}{'disk hits':>10}{'compiles':>9}")
    for name, r in rows.items():
        print(f"{name:<30}{r['ready']:>9.1f}{r['rps']:>8.0f}{r['p50'] * 1e3:>8.2f}"
              f"{r['p99'] * 1e3:>8.2f}{r['hot'] * 100:>7.1f}{r['rss'] / 2**20:>9.0f}"
              f"{r['peak'] / 2**20:>9.0f}{r['disk_hit']:>10.0f}{r['miss']:>9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
