"""Density: one runner, N distinct functions (default 1,000), called round-robin.

Every function is hello-world with a distinct custom section (so N distinct
modules and digests, compiled once into the disk cache); with ``--bulk-kib K``
it is instead a constant guest answering ``ok f<i>`` whose module carries a
passive data segment of K KiB (an artifact of about K KiB each, cheap to
compile).  wrk (Debian's) drives requests cycling over all N routes; then every
route is called once more and its answer checked.  The bench prints the
runner's resident memory (now and peak), p50/p99, the share of requests served
by a hot instance, the compiled-module cache results, the modules in memory
and evicted, and the correct answers, next to the same runner serving one
function with the same load generator (the baseline).  ``RSS/fn`` is what each
function adds to the baseline's resident memory, ``budget`` what the memory
budget counts (``edge_memory_budget_bytes``: reserved of usable).

Compiling thousands of modules takes long on a small machine: ``--cache-dir``
keeps the compiled modules in a folder across runs (the ``empty cache`` row is
then empty only the first time).

    python bench/density.py [--functions 1000] [--duration 15]
        [--bulk-kib 1024] [--memory-limit 256Mi] [--cache-dir DIR [--warm]]

Steady RSS of the disk-cache run, ``--bulk-kib 1 --memory-limit 256Mi``
(1 function: 77-78 MiB):

    functions   main adf0f82 (busy machine)    after issue 17's memory work (quiet)
    1,000       119 MiB, 36.5 KiB/fn           116 MiB, 33.2 KiB/fn (busy machine)
    10,000      332 MiB, 26.1 KiB/fn           193 MiB (peak 245), 11.8 KiB/fn

The 10,000-function runner is ready 51 s after start with the compiled modules
in ``--cache-dir`` and answers every route correctly; with the default
``limits.memory`` (64 MiB) only one or two new instances fit its budget at a
time, so under round-robin load almost every call waits for one (hot 0 %).
"""

from __future__ import annotations

import argparse
import functools
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402

from support.guests import constant_wat, write_function  # noqa: E402
from support.runner import RunnerProcess, metric_value  # noqa: E402
from support.wasm import build_function, distinct, wat_to_wasm  # noqa: E402

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

    # With thousands of functions a scrape has hundreds of thousands of samples: read
    # them in one pass (a metric_value call per function would read it N times).
    text = httpx.get(f"{runner.admin_url}/metrics", timeout=300).text
    names = {f"f{i}" for i in range(functions)}
    requests = sum(v for labels, v in samples(text, "edge_requests_total")
                   if labels.get("function") in names and labels.get("code") == "200")
    cold = sum(v for labels, v in samples(text, "edge_cold_starts_total")
               if labels.get("function") in names)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": latency("50"), "p99": latency("99"),
        "hot": 1 - cold / requests if requests else 0.0,
        "disk_hit": metric_value(text, "edge_module_cache_requests_total", {"result": "disk_hit"}),
        "miss": metric_value(text, "edge_module_cache_requests_total", {"result": "miss"}),
    }


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of metric ``name`` in a Prometheus text scrape: labels, value."""
    found = []
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        series, _, value = line.rpartition(" ")
        labels = dict(part.split("=", 1) for part in
                      series[len(name) + 1:].rstrip("}").split(",") if "=" in part)
        found.append(({k: v.strip('"') for k, v in labels.items()}, float(value)))
    return found


def budget(runner: RunnerProcess) -> tuple[float, float]:
    """The memory budget's reserved and usable bytes now."""
    text = httpx.get(f"{runner.admin_url}/metrics", timeout=300).text
    return (metric_value(text, "edge_memory_budget_bytes", {"kind": "reserved"}),
            metric_value(text, "edge_memory_budget_bytes", {"kind": "usable"}))


def bulky(index: int, kib: int) -> bytes:
    """A constant guest answering ``ok f<index>`` with ``kib`` KiB of passive data."""
    filler = f"{index:08d}".encode() * (kib * 128)
    data = "".join(f"\\{b:02x}" for b in filler)
    return wat_to_wasm(constant_wat(f"ok f{index}".encode(), extra=f'(data "{data}")'))


def correct(runner: RunnerProcess, functions: int, expected: Callable[[int], bytes]) -> int:
    """Call every function once; how many answered what they should."""
    good = 0
    with httpx.Client(base_url=runner.url, timeout=30) as client:
        for i in range(functions):
            response = client.get(f"/f{i}", params={"name": "Ada"})
            good += response.status_code == 200 and response.content == expected(i)
    return good


def run(functions: int, duration: int, module: Callable[[int], bytes], cache: Path,
        options: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(functions):
            write_function(folder, f"f{i}", module(i), path=f"/f{i}", path_type="Prefix")
        script = folder / "round-robin.lua"
        script.write_text(LUA.format(n=functions))
        started = time.monotonic()
        runner = RunnerProcess(folder, extra_args=["--cache-dir", str(cache), "--log-level",
                                                   "warning", *options])
        try:
            runner.start(wait_ready=False)
            runner.wait_ready(timeout=1800)
            ready = time.monotonic() - started
            result = load(runner, functions, duration, script)
            reference = httpx.get(f"{runner.url}/f0", params={"name": "Ada"}).content
            result["correct"] = correct(
                runner, functions,
                (lambda i: f"ok f{i}".encode()) if module is not distinct_hello else
                (lambda _i: reference))
            modules = runner.admin.get("/v1/functions").json()["modules"]
            result["loaded"], result["evictions"] = modules["loaded"], modules["evictions"]
            assert runner.process is not None
            result["rss"], result["peak"] = (float(v) for v in rss(runner.process.pid))
            result["reserved"], result["usable"] = budget(runner)
        finally:
            runner.stop()
        result["ready"] = ready
        return result


_HELLO: list[bytes] = []


def distinct_hello(index: int) -> bytes:
    if not _HELLO:
        _HELLO.append(build_function("hello-world").read_bytes())
    return distinct(_HELLO[0], index)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--bulk-kib", type=int, default=0,
                        help="constant guests with this much passive data (0: hello-world)")
    parser.add_argument("--memory-limit", default="",
                        help="the runner's --memory-limit (default: its own)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="keep compiled modules here across runs (default: a temporary"
                        " folder)")
    parser.add_argument("--warm", action="store_true",
                        help="--cache-dir already holds every module: skip the empty-cache run")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 2
    module: Callable[[int], bytes] = distinct_hello
    if args.bulk_kib:
        module = functools.partial(bulky, kib=args.bulk_kib)
    options = ["--memory-limit", args.memory_limit] if args.memory_limit else []
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = args.cache_dir or Path(cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        n = args.functions
        rows = {"1 function": run(1, args.duration, module, cache, options)}
        if not (args.warm and args.cache_dir):
            rows[f"{n} functions, empty cache"] = run(n, 2, module, cache, options)
        rows[f"{n} functions, disk cache"] = run(n, args.duration, module, cache, options)
    kind = f"constant + {args.bulk_kib} KiB data" if args.bulk_kib else "hello-world"
    limit = args.memory_limit or "default"
    print(f"wrk -t1 -c8 round-robin over every function's route; {kind} x N;"
          f" --memory-limit {limit}")
    print(f"{'runner':<30}{'ready s':>8}{'req/s':>7}{'p50 ms':>7}{'p99 ms':>7}{'hot %':>6}"
          f"{'RSS MiB':>8}{'peak':>6}{'RSS/fn KiB':>11}{'budget MiB':>14}{'disk':>6}"
          f"{'compl':>6}{'in mem':>7}{'evict':>7}{'correct':>8}")
    base = rows["1 function"]["rss"]
    for name, r in rows.items():
        count = 1 if name == "1 function" else n
        per = f"{(r['rss'] - base) / count / 1024:>11.1f}" if count > 1 else f"{'-':>11}"
        print(f"{name:<30}{r['ready']:>8.1f}{r['rps']:>7.0f}{r['p50'] * 1e3:>7.2f}"
              f"{r['p99'] * 1e3:>7.2f}{r['hot'] * 100:>6.1f}{r['rss'] / 2**20:>8.0f}"
              f"{r['peak'] / 2**20:>6.0f}{per}"
              f"{r['reserved'] / 2**20:>7.0f}/{r['usable'] / 2**20:<6.0f}"
              f"{r['disk_hit']:>6.0f}{r['miss']:>6.0f}"
              f"{r['loaded']:>7.0f}{r['evictions']:>7.0f}{r['correct']:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
