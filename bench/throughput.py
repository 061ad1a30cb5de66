"""Throughput benchmark: the runner vs a bare ASGI app, same load generator, one run.

Starts ``edge-runner serve`` with the ``constant`` function (built from source)
as the runner image runs it, compiled (``make compiled``, setup.py), three
times: hot instances with the access log on (the default), the same with
``--log-level warning`` (no access log), and a fresh instance per request
(``pool.reuse: false``, access log on) twice: renewed after each request (the
default, docs/abi.md) and made anew (``--instance-renewal false``); then hot
again as pure Python (a checkout's ``make run``); then ``bench/baseline_app.py`` under
the same uvicorn settings; ``--rounds`` times, one server at a time (an idle
runner's timer once cost its neighbour a quarter of its throughput).  wrk
(Debian's) drives each on loopback; it prints the medians of req/s, p50 and
p99 side by side with the ratio to the bare app, each round's hot ratio, the
access log's share of throughput, and the server's CPU time per request (user +
system, all threads, from /proc): on a machine shared with other work the
req/s move with the load, CPU per request much less.  Not a test: run it with
``make bench``.

    python bench/throughput.py [--duration 10] [--connections 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.runner import RunnerProcess, free_port, wait_until  # noqa: E402
from support.wasm import build_function  # noqa: E402

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s)", text)
    assert match, text
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(url: str, duration: int, connections: int, headers: tuple[str, ...] = ()
        ) -> dict[str, float]:
    """Run wrk once (``headers``: ``"name: value"`` sent with every request); return
    req/s, p50 and p99 in seconds, and the error count."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
         *(arg for header in headers for arg in ("-H", header)), url],
        check=True, capture_output=True, text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _seconds(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _seconds(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "errors": float(errors.group(1)) if errors else 0}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(pid: int, url: str, duration: int, connections: int) -> dict[str, float]:
    """wrk's figures plus the server's CPU microseconds per request."""
    before = cpu_seconds(pid)
    result = wrk(url, duration, connections)
    result["cpu_us"] = (cpu_seconds(pid) - before) / (result["rps"] * duration) * 1e6
    return result


def run_baseline(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "baseline_app:app", "--host", "127.0.0.1",
         "--port", str(port), "--http", "httptools", "--loop", "uvloop", "--no-access-log",
         "--log-level", "warning"],
        cwd=ROOT / "bench",
    )


def _folder(tmp: Path, name: str, module: Path, reuse: bool) -> Path:
    """A manifest folder serving ``module`` as ``constant`` (``pool.reuse`` as given)."""
    folder = tmp / name.replace(" ", "-").replace(",", "")
    shutil.copytree(module.parent / "manifests", folder / "manifests")
    shutil.copy(module, folder / module.name)
    manifest = folder / "manifests" / "function.yaml"
    if not reuse:
        manifest.write_text(manifest.read_text().replace("reuse: true", "reuse: false"))
    return folder


def _measure(pid: int, url: str, args: argparse.Namespace) -> dict[str, float]:
    """A warm-up, then :func:`measured`."""
    wrk(url, 2, args.connections)
    return measured(pid, url, args.duration, args.connections)


def _measure_baseline(args: argparse.Namespace) -> dict[str, float]:
    """:func:`_measure` of the bare app, started for it and stopped after."""
    import httpx

    port = free_port()
    baseline = run_baseline(port)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/").status_code == 200,
                   what="baseline app")
        return _measure(baseline.pid, f"http://127.0.0.1:{port}/", args)
    finally:
        baseline.terminate()
        baseline.wait()


def _check_renewal(runner: RunnerProcess, name: str) -> None:
    """The fresh rows measured what they say: renewed instances, or new ones only."""
    (function,) = runner.admin.get("/v1/functions").json()["functions"]
    renewed = function["pool"]["renewed"]
    if name == "runner fresh":
        assert renewed > 0, f"{name}: no instance was renewed"
    elif name == "runner fresh, anew":
        assert renewed == 0, f"{name}: {renewed} instances renewed"


def _median(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure every server this many times, in turn; print medians")
    parser.add_argument("runner_args", nargs="*", help="extra `edge-runner serve` options")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 2
    module = build_function("constant")
    subprocess.run(["make", "-s", "compiled"], cwd=ROOT, check=True)
    compiled = {"PYTHONPATH": str(ROOT / "build" / "compiled")}
    setups = {  # name: (pool.reuse, runner options, environment)
        "runner hot": (True, [], compiled),
        "runner hot, no log": (True, ["--log-level", "warning"], compiled),
        "runner fresh": (False, [], compiled),
        "runner fresh, anew": (False, ["--instance-renewal", "false"], compiled),
        "runner hot, Python": (True, [], {}),
    }
    rounds: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {name: _folder(Path(tmp), name, module, reuse)
                   for name, (reuse, _, _) in setups.items()}
        # One server at a time (an idle one would disturb the one measured), in turn,
        # round after round: a machine whose load drifts moves them all alike.
        for _ in range(args.rounds):
            for name, (_, options, env) in setups.items():
                with RunnerProcess(folders[name], extra_args=[*options, *args.runner_args],
                                   env=env) as runner:
                    assert runner.client.get("/constant").text == "ok"
                    compiled_now = "edge_compiled_modules 0.0" not in runner.metrics()
                    assert compiled_now == bool(env), f"{name}: compiled {compiled_now}"
                    assert runner.process is not None
                    rounds.setdefault(name, []).append(_measure(
                        runner.process.pid, f"{runner.url}/constant", args))
                    _check_renewal(runner, name)
            rounds.setdefault("bare ASGI", []).append(_measure_baseline(args))
    results = {name: _median(measured_rounds) for name, measured_rounds in rounds.items()}
    print(f"wrk -t1 -c{args.connections} -d{args.duration}s on loopback, {os.cpu_count()} cores;"
          f" median of {args.rounds} rounds, one server at a time, in turn")
    base = results["bare ASGI"]
    print(f"{'server':<20}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}"
          f"{'vs bare':>9}{'CPU us/req':>12}{'vs bare':>9}")
    for name, r in results.items():
        print(f"{name:<20}{r['rps']:>10.0f}{r['p50'] * 1e3:>10.2f}{r['p99'] * 1e3:>10.2f}"
              f"{r['errors']:>10.0f}{r['rps'] / base['rps']:>9.2f}{r['cpu_us']:>12.1f}"
              f"{base['cpu_us'] / r['cpu_us']:>9.2f}")
    ratios = [hot["rps"] / bare["rps"] for hot, bare in zip(rounds["runner hot"],
                                                            rounds["bare ASGI"], strict=True)]
    print(f"runner hot vs bare, each round: {', '.join(f'{r:.2f}' for r in ratios)}")
    on, off = results["runner hot"], results["runner hot, no log"]
    print(f"access log cost (hot, default --access-log-interval): "
          f"{1 - on['rps'] / off['rps']:.0%} of throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
