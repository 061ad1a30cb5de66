"""Hostile-guest benchmark: a healthy function's latency while hostile guests and clients run.

Three measurements against real runner processes on loopback, printed as tables:

1. Latency of a healthy (inline) function, first alone, then while client
   threads hammer the hostile corpus of ``tests/support/guests.py`` back to
   back (endless loops, memory bombs, deep recursion, traps, giant and
   malformed responses, output floods, WAGI endless and exit; each thread
   pausing 20 ms between requests, so endless guests keep worker threads
   spinning all the time) and slowloris / oversized-header clients.  Two
   views: a steady 200 req/s from a separate process (latency from each
   request's scheduled start, so a stall counts for every request it delays),
   in short idle and attacked phases alternated many times so that the
   machine's own noise hits both alike, p99 over all samples of each (the
   acceptance bound is p99 under attack <= 2x idle p99; idle CPUs are kept
   from halting, see :func:`shallow_idle`); and wrk at full speed (capacity:
   a spinning guest takes CPU the event loop would use).  Every hostile answer
   is checked against its documented status.  By default the runner (with all
   its guests) gets the upper half of the CPUs and every client the rest, as if
   the clients ran on other machines, as they do in production: on a small
   machine the load generators' own CPU use would otherwise be measured as
   interference.  ``--colocate`` shares all CPUs.
2. Timeout precision: requested vs observed wall time of endless guests with
   50 ms, 200 ms and 1 s limits (min / median / max of several runs).
3. The memory budget: a runner given a fake cgroup limit of 1 GiB, a function
   whose instances really touch their whole 300 MiB, more concurrent requests
   than fit: how many were served, how many got 503, and the runner's peak RSS
   against the limit (never an OOM kill).

Not a test: run it with ``python bench/hostile.py [--duration 10] [-- runner options]``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import importlib
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


from support import guests  # noqa: E402
from support.guests import write_function  # noqa: E402
from support.runner import RunnerProcess, metric_value, wait_until  # noqa: E402

MiB = 2**20
#: Requests per second of the steady healthy load (table 1).
PACED_RATE = 200
#: Seconds each hostile client thread pauses between its requests.
HOSTILE_PAUSE = 0.02
#: wrk driver shared with bench/throughput.py (a script beside this one, not a package).
wrk: Callable[[str, int, int], dict[str, float]] = importlib.import_module("throughput").wrk
#: p50 and p99, shared with bench/coldstart.py.
percentiles: Callable[[list[float]], tuple[float, float]] = importlib.import_module(
    "coldstart").percentiles

#: name -> (module, limits, abi, expected status)
HOSTILE: dict[str, tuple[str, dict[str, object], str, int]] = {
    "endless": (guests.endless_wat(), {"timeout": "1s"}, "edge", 504),
    "fuel": (guests.endless_wat(), {"fuel": 5_000_000}, "edge", 504),
    "bomb": (guests.memory_bomb_wat(), {"memory": "16Mi"}, "edge", 502),
    "big-grow": (guests.big_grow_wat(), {}, "edge", 502),
    "recursion": (guests.recursion_wat(), {}, "edge", 502),
    "trap": (guests.trap_wat(), {}, "edge", 502),
    "oob": (guests.oob_load_wat(), {}, "edge", 502),
    "giant": (guests.giant_response_wat(), {}, "edge", 502),
    "bad-header": (guests.bad_header_wat(), {}, "edge", 502),
    "flood": (guests.output_flood_wat(), {}, "edge", 200),
    "wagi-endless": (guests.wagi_wat("(loop $l (br $l))"), {"timeout": "1s"}, "wagi", 504),
    "wagi-exit": (guests.wagi_wat("(call $exit (i32.const 1))"), {}, "wagi", 502),
}


def paced(url: str, rate: int, duration: float) -> list[float]:
    """Latencies of GETs sent at a steady ``rate`` from a fresh process (its own GIL)."""
    out = subprocess.run(
        [sys.executable, __file__, "--paced", url, str(rate), str(duration)],
        check=True, capture_output=True, text=True,
    ).stdout
    return [float(x) for x in out.split()]


def summary(samples: list[float]) -> dict[str, float]:
    p50, p99 = percentiles(samples)
    return {"n": len(samples), "p50": p50, "p99": p99, "max": max(samples)}


@contextlib.contextmanager
def shallow_idle() -> Iterator[bool]:
    """Keep idle CPUs out of deep sleep while measuring (yields whether it could).

    Holding ``/dev/cpu_dma_latency`` at 0 (as cyclictest does) makes an idle CPU
    poll instead of halting.  On a VM a halted vCPU takes 0.2-10 ms to wake
    (measured here: 1 ms sleeps overshoot by p99 1.2 ms, max 37 ms, against p99
    0.1 ms, max 0.2 ms when held), which would inflate the idle phase only: under
    attack the CPUs never halt.  Needs root; without it the bench says so.
    """
    try:
        fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
    except OSError:
        yield False
        return
    try:
        os.write(fd, struct.pack("i", 0))
        yield True
    finally:
        os.close(fd)


def _paced_main(url: str, rate: int, duration: float) -> None:
    """Child process of :func:`paced`: one keep-alive connection, open-loop schedule."""
    host, port = url.split("//")[1].split("/", maxsplit=1)[0].split(":")
    path = "/" + url.split("//")[1].split("/", 1)[1]
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    interval = 1.0 / rate
    start = time.perf_counter()
    latencies = []
    for i in range(int(rate * duration)):
        due = start + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # the schedule itself, not a wait for a condition
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        latencies.append(time.perf_counter() - due)  # from the scheduled start
    print("\n".join(f"{x:.6f}" for x in latencies))


def _hammer(url: str, names: list[str], stop: threading.Event,
            seen: collections.Counter[tuple[str, int]]) -> None:
    """Calls ``names`` in turn, one at a time, with a short pause (a client's pace, so the
    load generator does not take the CPU the runner is measured on)."""
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            for name in names:
                seen[(name, client.get(f"/{name}").status_code)] += 1
                stop.wait(HOSTILE_PAUSE)


def _slowloris(port: int, stop: threading.Event, cut: list[int]) -> None:
    """Keeps 20 connections dripping a request head, reopening each one the runner cuts."""
    socks: list[socket.socket] = []
    while not stop.is_set():
        while len(socks) < 20:
            socks.append(socket.create_connection(("127.0.0.1", port)))
            socks[-1].sendall(b"GET /healthy HTTP/1.1\r\n")
        for sock in list(socks):
            try:
                sock.sendall(b"x")
            except OSError:
                cut[0] += 1
                socks.remove(sock)
                sock.close()
        # Oversized head: answered 431 and closed.
        with socket.create_connection(("127.0.0.1", port)) as big:
            big.sendall(b"GET /healthy HTTP/1.1\r\nx: " + b"a" * 65536 + b"\r\n\r\n")
            with_status = big.recv(64)
            cut[1] += with_status.startswith(b"HTTP/1.1 431")
        stop.wait(0.2)
    for sock in socks:
        sock.close()


class _Attack:
    """The hostile client threads; start() and stop() them around a measurement."""

    def __init__(self, runner: RunnerProcess) -> None:
        self.runner = runner
        self.seen: collections.Counter[tuple[str, int]] = collections.Counter()
        self.cut = [0, 0]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._stop.clear()
        names = list(HOSTILE)
        self._threads = [
            threading.Thread(target=_hammer, args=(self.runner.url, names[i::4], self._stop,
                                                   self.seen)) for i in range(4)
        ]
        self._threads.append(threading.Thread(
            target=_slowloris, args=(self.runner.port, self._stop, self.cut)))
        for thread in self._threads:
            thread.start()
        already = sum(self.seen.values())
        wait_until(lambda: sum(self.seen.values()) >= already + len(HOSTILE), timeout=30,
                   what="hostile load")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def split_cpus(colocate: bool) -> tuple[set[int], set[int]] | None:
    """(runner CPUs, client CPUs): the upper half of this process's CPUs for the runner
    and its guests, the rest for every client, as if the clients ran on other machines
    (they do in production); None to share all CPUs (``--colocate``, or a single CPU)."""
    cpus = sorted(os.sched_getaffinity(0))
    if colocate or len(cpus) < 2:
        return None
    return set(cpus[len(cpus) // 2:]), set(cpus[:len(cpus) // 2])


@contextlib.contextmanager
def on_cpus(cpus: set[int] | None) -> Iterator[None]:
    """Run the enclosed code's thread on ``cpus``; threads and processes it starts
    inherit them (Linux affinity is per thread)."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def latency_under_attack(
    folder: Path, *, duration: int, phase: float, connections: int, rounds: int,
    runner_args: list[str], split: tuple[set[int], set[int]] | None,
) -> dict[str, object]:
    """Alternates short idle and attacked phases ``rounds`` times, so the machine's
    own noise hits both alike; returns every latency of each phase and the wrk runs."""
    write_function(folder, "healthy", guests.constant_wat(b"fine"))
    for name, (wat, limits, abi, _) in HOSTILE.items():
        write_function(folder, name, wat, limits=limits, abi=abi)
    args = ["--log-level", "error", "--head-timeout", "2", *runner_args]
    runner_cpus, client_cpus = split or (None, None)
    with on_cpus(client_cpus), contextlib.ExitStack() as stack:
        with on_cpus(runner_cpus):
            runner = stack.enter_context(RunnerProcess(folder, extra_args=args))
        healthy = f"{runner.url}/healthy"
        wrk(healthy, 2, connections)  # warm-up
        attack = _Attack(runner)
        runs: dict[str, list[list[float]]] = {"idle": [], "attacked": []}
        for _ in range(rounds):
            runs["idle"].append(paced(healthy, PACED_RATE, phase))
            attack.start()
            runs["attacked"].append(paced(healthy, PACED_RATE, phase))
            attack.stop()
        idle = wrk(healthy, duration, connections)
        attack.start()
        attacked = wrk(healthy, duration, connections)
        attack.stop()
        alive = runner.alive() and runner.client.get("/healthy").text == "fine"
    # 503 is the documented answer when the queue for worker threads (held by endless
    # guests) is longer than --max-wait: load shedding, counted apart from wrong answers.
    shed = sum(v for k, v in attack.seen.items() if k[1] == 503 != HOSTILE[k[0]][3])
    wrong = {k: v for k, v in attack.seen.items() if k[1] not in (503, HOSTILE[k[0]][3])}
    return {"idle": idle, "attacked": attacked, "paced": runs,
            "hostile": sum(attack.seen.values()), "wrong": wrong, "shed": shed,
            "slowloris_cut": attack.cut[0], "oversized_431": attack.cut[1], "alive": alive}


def timeout_precision(folder: Path, runs: int) -> list[tuple[float, list[float]]]:
    requested = [0.05, 0.2, 1.0]
    for seconds in requested:
        write_function(folder, f"t{int(seconds * 1000)}", guests.endless_wat(),
                       limits={"timeout": f"{int(seconds * 1000)}ms"})
    table = []
    with RunnerProcess(folder, extra_args=["--log-level", "error"]) as runner:
        for seconds in requested:
            samples = []
            for _ in range(runs):
                started = time.perf_counter()
                assert runner.client.get(f"/t{int(seconds * 1000)}").status_code == 504
                samples.append(time.perf_counter() - started)
            table.append((seconds, samples))
    return table


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def memory_budget(folder: Path, requests: int) -> dict[str, float]:
    cgroup = folder / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text(f"{1024 * MiB}\n")
    pages = 300 * 16 - 4  # up to exactly limits.memory (300 MiB), every page touched
    write_function(folder / "fns", "hog", guests.hog_wat(pages, 1500),
                   limits={"memory": "300Mi", "timeout": "10s"}, pool={"maxInstances": 16})
    env = {"EDGE_RUNNER_CGROUP_ROOT": str(cgroup)}
    with RunnerProcess(folder / "fns", env=env, extra_args=["--log-level", "error"]) as runner, \
            ThreadPoolExecutor(requests) as pool:
        assert runner.process is not None
        pid = runner.process.pid
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss(pid))
                done.wait(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        get: Callable[[], int] = lambda: httpx.get(f"{runner.url}/hog", timeout=30).status_code  # noqa: E731
        codes = collections.Counter(f.result() for f in [pool.submit(get) for _ in range(requests)])
        done.set()
        sampler.join()
        text = runner.metrics()
        kinds = {k: metric_value(text, "edge_memory_budget_bytes", {"kind": k})
                 for k in ("limit", "baseline", "usable", "reserved")}
    return {**kinds, "served": codes[200], "refused": codes[503], "other": requests - codes[200]
            - codes[503], "peak_rss": peak[0]}


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--paced":
        _paced_main(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk phase")
    parser.add_argument("--phase", type=float, default=2.0,
                        help="seconds per paced phase (table 1a)")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5, help="samples per timeout")
    parser.add_argument("--rounds", type=int, default=10, help="idle/attacked alternations")
    parser.add_argument("--only-latency", action="store_true", help="skip tables 2 and 3")
    parser.add_argument("--colocate", action="store_true",
                        help="table 1: clients share the runner's CPUs (default: split them)")
    parser.add_argument("runner_args", nargs="*", help="extra `edge-runner serve` options")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, shallow_idle() as held:
        base = Path(tmp)
        for sub in ("attack", "timeouts", "budget/fns"):
            (base / sub).mkdir(parents=True)
        split = split_cpus(args.colocate)
        attack = latency_under_attack(
            base / "attack", duration=args.duration, phase=args.phase,
            connections=args.connections, rounds=args.rounds, runner_args=args.runner_args,
            split=split,
        )
        if not args.only_latency:
            precision = timeout_precision(base / "timeouts", args.runs)
            budget = memory_budget(base / "budget", requests=6)

    runs = attack["paced"]
    assert isinstance(runs, dict)
    print(f"1a. healthy function at a steady {PACED_RATE} req/s, {args.rounds} alternating"
          f" rounds of {args.phase:g}s per phase; idle CPUs "
          + ("kept polling (/dev/cpu_dma_latency = 0)" if held else
             "free to halt (no /dev/cpu_dma_latency: idle p99 includes CPU wake-ups)")
          + ("; runner on CPUs {}, clients on CPUs {}".format(*map(sorted, split)) if split
             else "; clients share the runner's CPUs"))
    print(f"{'phase':<26}{'samples':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
          f"   p99 ms of each round")
    pooled, round_p99 = {}, {}
    for label, key in (("idle", "idle"), ("hostile guests + clients", "attacked")):
        pooled[key] = summary([x for r in runs[key] for x in r])
        round_p99[key] = [percentiles(r)[1] for r in runs[key]]
        each = " ".join(f"{p99 * 1e3:.1f}" for p99 in round_p99[key])
        row = pooled[key]
        print(f"{label:<26}{row['n']:>8}{row['p50'] * 1e3:>8.2f}{row['p99'] * 1e3:>8.2f}"
              f"{row['max'] * 1e3:>8.1f}   {each}")
    ratio = pooled["attacked"]["p99"] / pooled["idle"]["p99"]
    paired = statistics.median(a / i for i, a in zip(round_p99["idle"], round_p99["attacked"],
                                                     strict=True))
    print(f"p99 under attack / idle p99: {ratio:.2f}x over all samples"
          f" (bound 2x -> {'OK' if ratio <= 2 else 'OVER'}); median of per-round ratios"
          f" {paired:.2f}x")
    idle, attacked = attack["idle"], attack["attacked"]
    assert isinstance(idle, dict) and isinstance(attacked, dict)
    print(f"1b. the same at full speed, wrk -t1 -c{args.connections} -d{args.duration}s")
    print(f"{'phase':<26}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for label, r in (("idle", idle), ("hostile guests + clients", attacked)):
        print(f"{label:<26}{r['rps']:>10.0f}{r['p50'] * 1e3:>10.2f}{r['p99'] * 1e3:>10.2f}")
    print(f"hostile requests: {attack['hostile']}, shed with 503: {attack['shed']},"
          f" with an unexpected status: {attack['wrong']};"
          f" slowloris connections cut: {attack['slowloris_cut']}, oversized heads answered"
          f" 431: {attack['oversized_431']}; runner alive: {attack['alive']}")
    if args.only_latency:
        return 0
    print("\n2. timeout precision (client-observed, endless guest)")
    print(f"{'requested':>10}{'min ms':>10}{'median ms':>11}{'max ms':>10}{'bound ms':>10}")
    for seconds, samples in precision:
        bound = seconds + max(0.1 * seconds, 0.02)
        print(f"{seconds * 1e3:>10.0f}{min(samples) * 1e3:>10.1f}"
              f"{statistics.median(samples) * 1e3:>11.1f}{max(samples) * 1e3:>10.1f}"
              f"{bound * 1e3:>10.0f}")
    print("\n3. memory budget (fake cgroup memory.max = 1 GiB, fraction 0.8, 6 x 300 MiB hogs)")
    for key in ("limit", "baseline", "usable", "peak_rss"):
        print(f"{key:<10}{budget[key] / MiB:>10.0f} MiB")
    print(f"served {budget['served']:.0f}, refused 503 {budget['refused']:.0f},"
          f" other {budget['other']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
