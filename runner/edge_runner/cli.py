"""``edge-runner`` command line (docs/cli.md): ``edge-runner serve [options]``.

The options are the fields of :class:`edge_runner.settings.RunnerSettings`
(flags and ``EDGE_RUNNER_*`` variables); this module parses them, reports bad
values as a usage error (exit 2) naming the option, and runs the server.
"""

from __future__ import annotations

import asyncio
import sys

from pydantic import ValidationError
from pydantic_settings import CliApp, SettingsError

from edge_api import logs
from edge_runner.server import serve
from edge_runner.settings import RunnerSettings, unknown_variables

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
    unknown = unknown_variables()
    if unknown:
        return f"unknown setting(s) in the environment: {', '.join(unknown)}"
    try:
        settings = CliApp.run(RunnerSettings, cli_args=argv)
    except ValidationError as exc:
        return "; ".join(
            f"--{'-'.join(str(part) for part in error['loc']).replace('_', '-')}: {error['msg']}"
            for error in exc.errors()
        )
    except SettingsError as exc:
        return str(exc)
    if settings.manifests is not None and not settings.manifests.is_dir():
        return f"--manifests {settings.manifests}: not a directory"
    return settings


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if args else 2
    if args[0] != "serve":
        return _usage_error(f"unknown command {args[0]!r} (expected: serve)")
    settings = parse(args[1:])
    if isinstance(settings, str):
        return _usage_error(settings)
    logs.configure(settings.log_level, settings.log_format)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
