"""``edge-runner`` command line (docs/cli.md): ``serve``, ``new`` and ``build``.

``serve``'s options are the fields of :class:`edge_runner.settings.RunnerSettings`
(flags and ``EDGE_RUNNER_*`` variables); ``new`` and ``build`` (a function crate
and its module, :mod:`edge_runner.scaffold`) have their own small models.  This
module parses them, reports bad values as a usage error (exit 2) naming the
option, and runs the command.
"""

from __future__ import annotations

import asyncio
import sys

from edge_api import logs, settings
from edge_runner import scaffold
from edge_runner.server import serve
from edge_runner.settings import RunnerSettings

USAGE = """usage: edge-runner COMMAND [options]

Run WebAssembly HTTP functions.  `edge-runner COMMAND --help` lists every option.

commands:
  serve   serve functions (standalone with --manifests DIR, else cluster mode)
  new     create a function crate: edge-runner new NAME [--dir DIR]
  build   build a function crate to its .wasm: edge-runner build [DIR]
"""
COMMANDS = ("serve", "new", "build")


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


def _serve(argv: list[str]) -> int:
    options = parse(argv)
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


def _new(argv: list[str]) -> int:
    options = settings.parse(scaffold.NewOptions, argv)
    if isinstance(options, str):
        return _usage_error(options)
    try:
        crate = scaffold.create(options)
    except scaffold.ScaffoldError as exc:
        return _usage_error(str(exc))
    print(scaffold.NEXT_STEPS.format(crate=crate, path=options.path or f"/{options.name}"),
          end="")
    return 0


def _build(argv: list[str]) -> int:
    options = settings.parse(scaffold.BuildOptions, argv)
    if isinstance(options, str):
        return _usage_error(options)
    try:
        return scaffold.build(options)
    except scaffold.ScaffoldError as exc:
        return _usage_error(str(exc))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "serve":
        return _serve(rest)
    if command == "new":
        return _new(rest)
    if command == "build":
        return _build(rest)
    return _usage_error(f"unknown command {command!r} (expected: {', '.join(COMMANDS)})")


if __name__ == "__main__":
    sys.exit(main())
