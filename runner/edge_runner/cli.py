"""``edge-runner`` command line (docs/cli.md): ``edge-runner serve [options]``.

The options are the fields of :class:`edge_runner.settings.RunnerSettings`
(flags and ``EDGE_RUNNER_*`` variables); this module parses them, reports bad
values as a usage error (exit 2) naming the option, and runs the server.
"""

from __future__ import annotations

import asyncio
import sys

from edge_api import logs, settings
from edge_runner.server import serve
from edge_runner.settings import RunnerSettings

USAGE = """usage: edge-runner serve [options]

Run WebAssembly HTTP functions.  `edge-runner serve --help` lists every option.

commands:
  serve   serve functions (standalone with --manifests DIR, else cluster mode)
"""


def _usage_error(message: str) -> int:
    print(f"edge-runner: error: {message}", file=sys.stderr)
    return 2


def parse(argv: list[str]) -> RunnerSettings | str:
    """Settings from ``serve``'s arguments and the environment, or an error message."""
    parsed = settings.parse(RunnerSettings, argv)
    if isinstance(parsed, RunnerSettings) and parsed.manifests is not None \
            and not parsed.manifests.is_dir():
        return f"--manifests {parsed.manifests}: not a directory"
    return parsed


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if args else 2
    if args[0] != "serve":
        return _usage_error(f"unknown command {args[0]!r} (expected: serve)")
    options = parse(args[1:])
    if isinstance(options, str):
        return _usage_error(options)
    logs.configure(options.log_level, options.log_format)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    asyncio.run(serve(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
