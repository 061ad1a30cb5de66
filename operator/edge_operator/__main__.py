"""Operator as ``python -m edge_operator``."""
import sys

from edge_operator.cli import main

sys.exit(main())
