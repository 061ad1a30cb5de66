"""Runner as ``python -m edge_runner``."""
import sys

from edge_runner.cli import main

sys.exit(main())
