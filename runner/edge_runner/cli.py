"""``edge-runner`` command line (docs/cli.md)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from edge_api import logs
from edge_api.units import parse_quantity
from edge_runner.http.guard import HttpLimits
from edge_runner.invoke.budget import BudgetSettings
from edge_runner.server import ServeOptions, serve


def _default_cache_dir() -> Path:
    configured = os.environ.get("EDGE_RUNNER_CACHE_DIR")
    if configured is not None:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-runner" / "modules"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-runner", description="Run WebAssembly HTTP functions."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "serve", help="serve functions (standalone with --manifests, else cluster mode)"
    )
    defaults = ServeOptions()
    run.add_argument(
        "--manifests", type=Path, help="folder of EdgeFunction/EdgeRoute YAML (standalone mode)"
    )
    run.add_argument("--host", default=defaults.host, help="data plane bind address")
    run.add_argument("--port", type=int, default=defaults.port, help="data plane port")
    run.add_argument("--admin-host", default=defaults.admin_host, help="admin plane bind address")
    run.add_argument("--admin-port", type=int, default=defaults.admin_port, help="admin plane port")
    run.add_argument("--max-concurrency", type=int, default=defaults.max_concurrency,
                     help="guest invocations running at once (worker threads)")
    run.add_argument("--max-waiting", type=int, default=defaults.max_waiting,
                     help="requests queued per function when all its instances are busy")
    run.add_argument("--max-wait", type=float, default=defaults.max_wait,
                     help="seconds a queued request waits before 503")
    run.add_argument("--drain-delay", type=float, default=defaults.drain_delay,
                     help="seconds between failing /readyz and closing the data port on SIGTERM")
    run.add_argument("--grace", type=float, default=defaults.grace,
                     help="seconds in-flight requests get to finish on shutdown")
    run.add_argument("--inline-fuel", type=int, default=defaults.inline_fuel,
                     help="fuel a call may use on the event loop before moving to a thread"
                     " (0 = always use threads)")
    run.add_argument("--max-queued", type=int, default=defaults.max_queued,
                     help="requests queued runner-wide for a worker thread")
    run.add_argument("--max-connections", type=int, default=defaults.max_connections,
                     help="open connections per port before 503")
    run.add_argument("--worker-nice", type=int, default=defaults.worker_nice,
                     help="nice increment of guest worker threads (0 = same as the event loop)")
    run.add_argument("--cpu-slice", type=float, default=defaults.cpu_slice,
                     help="time slice in seconds the runner's threads ask the scheduler for:"
                          " how long a guest may keep a CPU from the event loop"
                          " (Linux 6.12+; 0 = kernel default)")
    memory, http = BudgetSettings(), HttpLimits()
    run.add_argument("--memory-limit", type=parse_quantity,
                     help="memory limit to budget against (e.g. 512Mi); default: the cgroup's")
    run.add_argument("--memory-default", type=parse_quantity, default=memory.default_limit,
                     help="memory limit when there is no cgroup limit")
    run.add_argument("--memory-fraction", type=float, default=memory.fraction,
                     help="share of the memory limit guests + runner baseline may reserve")
    run.add_argument("--cgroup-root", type=Path,
                     help="cgroup filesystem root (default: $EDGE_RUNNER_CGROUP_ROOT or"
                     " /sys/fs/cgroup)")
    run.add_argument("--max-head-bytes", type=int, default=http.max_head_bytes,
                     help="request line + headers, bytes (over: 431)")
    run.add_argument("--max-headers", type=int, default=http.max_headers,
                     help="request header fields (over: 431)")
    run.add_argument("--head-timeout", type=float, default=http.head_timeout,
                     help="seconds a client has to send a request head (slowloris: 408)")
    run.add_argument("--body-timeout", type=float, default=http.body_timeout,
                     help="seconds a client has to send a request body (408)")
    run.add_argument("--namespace", help="namespace to watch in cluster mode (default: own)")
    run.add_argument("--cache-dir", type=Path, default=_default_cache_dir(),
                     help="compiled-module disk cache (default: $EDGE_RUNNER_CACHE_DIR or"
                     " ~/.cache/edge-runner/modules); '' disables it")
    run.add_argument("--instance-max-requests", type=int,
                     default=defaults.instance_max_requests,
                     help="requests after which an instance is recycled (0 = never)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-format", default="json", choices=["json", "text"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    if args.manifests is not None and not args.manifests.is_dir():
        print(f"edge-runner: --manifests {args.manifests}: not a directory", file=sys.stderr)
        return 2
    options = ServeOptions(
        manifests=args.manifests,
        host=args.host,
        port=args.port,
        admin_host=args.admin_host,
        admin_port=args.admin_port,
        max_concurrency=args.max_concurrency,
        max_waiting=args.max_waiting,
        max_wait=args.max_wait,
        drain_delay=args.drain_delay,
        grace=args.grace,
        inline_fuel=args.inline_fuel,
        cache_dir=args.cache_dir if str(args.cache_dir) not in ("", ".") else None,
        instance_max_requests=args.instance_max_requests,
        namespace=args.namespace,
        max_queued=args.max_queued,
        max_connections=args.max_connections,
        worker_nice=args.worker_nice,
        cpu_slice=args.cpu_slice,
        memory=BudgetSettings(
            limit=args.memory_limit, default_limit=args.memory_default,
            fraction=args.memory_fraction, cgroup_root=args.cgroup_root,
        ),
        http=HttpLimits(
            max_head_bytes=args.max_head_bytes, max_headers=args.max_headers,
            head_timeout=args.head_timeout, body_timeout=args.body_timeout,
        ),
    )
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    asyncio.run(serve(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
