"""Fairness benchmark: healthy functions beside hostile ones on a runner with one CPU.

The load an operator would see on a 1-CPU pod: ``--clients`` (32) keep-alive
connections, each sending one request after another (closed loop), every
request to a function drawn at random with these weights:

    healthy (90%)  wagi-hello   the WAGI sample (a worker thread per call, ~0.5 ms)   200
                   hello-world  the edge sample (runs on the event loop)              200
    hostile (10%)  loop         endless loop, limits.timeout 100ms                     504
                   trap         traps at once                                          502
                   bomb         grows memory until refused (limits.memory 16Mi)        502
                   flood        writes 1 MiB to stderr, then answers                   200

and the same load minus the hostile functions (their requests go to the healthy
ones in the same proportions).  The two phases alternate ``--rounds`` times on
one runner so that the machine's own noise hits both alike.  The runner (with
all its guests) runs on one CPU (``--runner-cpus``, by affinity: it sizes its
worker threads from it), the clients in a separate process on the others.

Printed: per function and phase the requests, req/s, p50, p99 and status
codes; the checks of the acceptance criteria (a thread-bound healthy function
keeps p99 <= 2x its p99 without the hostile functions + 10 ms and gets no 503,
hostile functions get their documented answers, healthy throughput >= 0.8x);
and from the runner's /metrics the mean wait for a worker thread per function
and the functions quarantined.

Not a test: ``python bench/fairness.py [--duration 60] [--rounds 4] [-- runner options]``
(``--duration``: seconds of each phase kind in all, split over the rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support import guests  # noqa: E402
from support.guests import write_function  # noqa: E402
from support.runner import RunnerProcess, metric_value  # noqa: E402
from support.wasm import build_function  # noqa: E402

#: Pieces of bench/hostile.py (a script beside this one, not a package).
_hostile = importlib.import_module("hostile")
on_cpus: Callable[[set[int] | None], contextlib.AbstractContextManager[None]] = _hostile.on_cpus
shallow_idle: Callable[[], contextlib.AbstractContextManager[bool]] = _hostile.shallow_idle
percentiles: Callable[[list[float]], tuple[float, float]] = _hostile.percentiles

#: name -> (path, share of all requests, expected status)
HEALTHY: dict[str, tuple[str, float, int]] = {
    "wagi-hello": ("/wagi", 0.45, 200),
    "hello-world": ("/hello", 0.45, 200),
}
HOSTILE: dict[str, tuple[str, float, int]] = {
    "loop": ("/loop", 0.025, 504),
    "trap": ("/trap", 0.025, 502),
    "bomb": ("/bomb", 0.025, 502),
    "flood": ("/flood", 0.025, 200),
}
#: The healthy function whose calls always need a worker thread (the acceptance subject).
THREAD_BOUND = "wagi-hello"


def stderr_flood_wat() -> str:
    """:func:`support.guests.output_flood_wat`, writing to stderr (fd 2) instead of stdout."""
    stdout = "(call $write (i32.const 1)"
    wat = guests.output_flood_wat()
    assert stdout in wat
    return wat.replace(stdout, "(call $write (i32.const 2)")


def write_functions(folder: Path) -> None:
    """The two samples (built from source) and the hostile guests, as manifests in ``folder``."""
    for name, module in (("hello-world", build_function("hello-world")),
                         ("wagi-hello", build_function("wagi-hello"))):
        shutil.copytree(module.parent / "manifests", folder / name / "manifests")
        shutil.copy(module, folder / name / module.name)
    write_function(folder, "loop", guests.endless_wat(), limits={"timeout": "100ms"})
    write_function(folder, "trap", guests.trap_wat())
    write_function(folder, "bomb", guests.memory_bomb_wat(), limits={"memory": "16Mi"})
    write_function(folder, "flood", stderr_flood_wat())


# -- the load generator (a child process: its own GIL, on the clients' CPUs) ----------------


async def _connection(host: str, port: int, mix: dict[str, tuple[str, float, int]], *,
                      seed: int, until: float, results: dict[str, Any]) -> None:
    names = list(mix)
    weights = [mix[name][1] for name in names]
    requests = {name: f"GET {mix[name][0]} HTTP/1.1\r\nhost: bench\r\n\r\n".encode()
                for name in names}
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < until:
            name = rng.choices(names, weights)[0]
            started = time.perf_counter()
            writer.write(requests[name])
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, close = 0, False
            for line in head.split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                key = key.strip().lower()
                if key == b"content-length":
                    length = int(value)
                elif key == b"connection" and value.strip().lower() == b"close":
                    close = True
            await reader.readexactly(length)
            entry = results[name]
            entry["latency"].append(time.perf_counter() - started)
            entry["codes"][str(status)] = entry["codes"].get(str(status), 0) + 1
            if close:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()


async def _load(url: str, mix: dict[str, tuple[str, float, int]], clients: int,
                duration: float, seed: int) -> dict[str, Any]:
    host, port = url.split("//")[1].split(":")
    results: dict[str, Any] = {name: {"latency": [], "codes": {}} for name in mix}
    until = time.perf_counter() + duration
    await asyncio.gather(*(_connection(host, int(port), mix, seed=seed * 1000 + i, until=until,
                                       results=results) for i in range(clients)))
    return results


def _load_main(url: str, spec: str) -> None:
    """Child process of :func:`load`: writes the results as JSON to ``options["out"]``."""
    options = json.loads(spec)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    results = asyncio.run(_load(url, options["mix"], options["clients"], options["duration"],
                                options["seed"]))
    Path(options["out"]).write_text(json.dumps(results))


def load(url: str, mix: dict[str, tuple[str, float, int]], clients: int, duration: float,
         seed: int) -> dict[str, Any]:
    """Per function: every latency (seconds) and the count of each status code."""
    with tempfile.TemporaryDirectory(prefix="edge-load-") as tmp:
        out = Path(tmp) / "results.json"
        spec = json.dumps({"mix": mix, "clients": clients, "duration": duration, "seed": seed,
                           "out": str(out)})
        subprocess.run([sys.executable, __file__, "--load", url, spec], check=True)
        results: dict[str, Any] = json.loads(out.read_text())
    return results


# -- the measurement ------------------------------------------------------------------------


def healthy_only() -> dict[str, tuple[str, float, int]]:
    return dict(HEALTHY)


def mixed() -> dict[str, tuple[str, float, int]]:
    return {**HEALTHY, **HOSTILE}


def merge(into: dict[str, Any], results: dict[str, Any]) -> None:
    for name, entry in results.items():
        target = into.setdefault(name, {"latency": [], "codes": collections.Counter()})
        target["latency"].extend(entry["latency"])
        target["codes"].update(entry["codes"])


def measure(folder: Path, *, clients: int, duration: float, rounds: int,
            runner_args: list[str], runner_cpus: set[int], client_cpus: set[int] | None,
            ) -> dict[str, Any]:
    """Alternate the two phases ``rounds`` times on one runner; pooled results per phase."""
    phase = duration / rounds
    args = ["--log-level", "error", *runner_args]
    pooled: dict[str, dict[str, Any]] = {"healthy": {}, "mixed": {}}
    with on_cpus(client_cpus), contextlib.ExitStack() as stack:
        with on_cpus(runner_cpus):
            runner = stack.enter_context(RunnerProcess(folder, extra_args=args))
        for name, (path, _, expected) in mixed().items():
            status = runner.client.get(path).status_code
            assert status == expected, f"{name}: {status}"
        load(runner.url, healthy_only(), clients, 2.0, seed=0)  # warm-up
        for i in range(rounds):
            merge(pooled["healthy"], load(runner.url, healthy_only(), clients, phase, seed=i))
            merge(pooled["mixed"], load(runner.url, mixed(), clients, phase, seed=i))
        metrics = runner.metrics()
        alive = runner.alive()
    return {"phases": pooled, "seconds": phase * rounds, "metrics": metrics, "alive": alive}


def row(entry: dict[str, Any] | None, seconds: float) -> str:
    if not entry or not entry["latency"]:
        return f"{'-':>7}{'-':>8}{'-':>8}{'-':>8}  {'':<26}"
    p50, p99 = percentiles(entry["latency"])
    codes = " ".join(f"{code}:{n}" for code, n in sorted(entry["codes"].items()))
    return (f"{len(entry['latency']):>7}{len(entry['latency']) / seconds:>8.0f}"
            f"{p50 * 1e3:>8.2f}{p99 * 1e3:>8.1f}  {codes:<26}")


def wait_by_function(metrics: str) -> dict[str, tuple[float, float]]:
    """Per function, requests that waited for a worker thread and their mean wait (seconds)."""
    found = {}
    for name in mixed():
        count = sum(metric_value(metrics, "edge_worker_wait_seconds_count",
                                 {"function": name, "lane": lane})
                    for lane in ("shared", "quarantine"))
        total = sum(metric_value(metrics, "edge_worker_wait_seconds_sum",
                                 {"function": name, "lane": lane})
                    for lane in ("shared", "quarantine"))
        found[name] = (count, total / count if count else 0.0)
    return found


def report(result: dict[str, Any], args: argparse.Namespace, runner_cpus: set[int],
           client_cpus: set[int] | None, held: bool) -> bool:
    """Print the table and the checks; returns whether every check passed."""
    seconds = result["seconds"]
    healthy, attacked = result["phases"]["healthy"], result["phases"]["mixed"]
    print(f"{args.clients} closed-loop clients, {args.rounds} alternating rounds of"
          f" {seconds / args.rounds:g}s per phase; runner on CPU(s) {sorted(runner_cpus)},"
          f" clients on {sorted(client_cpus) if client_cpus else 'the same'}; idle CPUs "
          + ("kept polling" if held else "free to halt")
          + (f"; runner options: {' '.join(args.runner_args)}" if args.runner_args else ""))
    header = f"{'n':>7}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}  {'codes':<26}"
    print(f"{'':<13}{'without hostile functions':^57}|{'with hostile functions':^57}")
    print(f"{'function':<13}{header}|{header}")
    for name in mixed():
        print(f"{name:<13}{row(healthy.get(name), seconds)}|{row(attacked.get(name), seconds)}")

    def served(phase: dict[str, Any]) -> int:
        return sum(entry["codes"].get("200", 0) for name, entry in phase.items()
                   if name in HEALTHY)

    base_p99 = percentiles(healthy[THREAD_BOUND]["latency"])[1]
    hit_p99 = percentiles(attacked[THREAD_BOUND]["latency"])[1]
    bound = 2 * base_p99 + 0.010
    shed = attacked[THREAD_BOUND]["codes"].get("503", 0)
    ratio = served(attacked) / served(healthy)
    wrong = {name: {c: n for c, n in attacked[name]["codes"].items() if int(c) != expected}
             for name, (_, _, expected) in HOSTILE.items()}
    wrong = {name: codes for name, codes in wrong.items() if codes}
    checks = [
        (f"{THREAD_BOUND} p99 {hit_p99 * 1e3:.1f} ms <= 2 x {base_p99 * 1e3:.1f} ms + 10 ms"
         f" = {bound * 1e3:.1f} ms", hit_p99 <= bound),
        (f"{THREAD_BOUND} 503 with hostile functions: {shed}", shed == 0),
        ("hostile functions answered as documented (504 loop, 502 trap and bomb, 200 flood)"
         + (f"; otherwise: {wrong}" if wrong else ""), not wrong),
        (f"healthy throughput {served(attacked) / seconds:.0f} / {served(healthy) / seconds:.0f}"
         f" req/s = {ratio:.2f} >= 0.8", ratio >= 0.8),
        (f"runner alive: {result['alive']}", bool(result["alive"])),
    ]
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'FAIL'}] {text}")
    metrics = result["metrics"]
    waits = wait_by_function(metrics)
    print("worker-thread waits over both phases (edge_worker_wait_seconds): "
          + ", ".join(f"{name} {count:.0f} x {mean * 1e3:.2f} ms"
                      for name, (count, mean) in waits.items() if count))
    quarantined = [name for name in mixed()
                   if metric_value(metrics, "edge_function_quarantined", {"function": name})]
    entered = {name: metric_value(metrics, "edge_quarantines_total", {"function": name})
               for name in mixed()}
    print(f"quarantined at the end: {', '.join(quarantined) or 'none'}; times quarantined: "
          + ", ".join(f"{name} {n:.0f}" for name, n in entered.items() if n))
    return all(ok for _, ok in checks)


@contextlib.contextmanager
def _folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="edge-fairness-") as tmp:
        yield Path(tmp)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--load":
        _load_main(sys.argv[2], sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds of each phase kind in all (split over the rounds)")
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the two phases")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--runner-cpus", type=int, default=1,
                        help="CPUs the runner may use (the last ones of this process's)")
    parser.add_argument("runner_args", nargs="*", help="extra `edge-runner serve` options")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    runner_cpus = set(cpus[-args.runner_cpus:])
    client_cpus = set(cpus) - runner_cpus or None
    with _folder() as folder, shallow_idle() as held:
        write_functions(folder)
        result = measure(folder, clients=args.clients, duration=args.duration,
                         rounds=args.rounds, runner_args=args.runner_args,
                         runner_cpus=runner_cpus, client_cpus=client_cpus)
    return 0 if report(result, args, runner_cpus, client_cpus, held) else 1


if __name__ == "__main__":
    sys.exit(main())
