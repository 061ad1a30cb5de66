"""``edge-operator`` command line: runs the kopf operator."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("edge-operator: not implemented yet", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
