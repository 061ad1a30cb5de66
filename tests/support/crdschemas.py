"""The real CRDs of the chart's third-party objects, for tests/helm/test_install.py.

Sits in tests/support/ (imported as ``support.crdschemas``). :func:`find_crd_schemas`
returns a directory holding ``servicemonitors.yaml``, ``prometheusrules.yaml``
(Prometheus Operator) and ``httproutes.yaml`` (Gateway API, standard channel):
``EDGE_CRD_DIR`` if set, else what ``tests/crd-schemas/fetch.sh`` prints (it takes
them from the projects' Go module zips once, into a cache outside the repo).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]
FETCH_SCRIPT = TESTS_DIR / "crd-schemas" / "fetch.sh"
FILES = ("servicemonitors.yaml", "prometheusrules.yaml", "httproutes.yaml")


class CrdSchemaError(RuntimeError):
    """The CRDs could not be fetched."""


def find_crd_schemas() -> Path:
    # stderr (progress) goes to ours; fetch.sh honours EDGE_CRD_DIR itself.
    result = subprocess.run(["bash", str(FETCH_SCRIPT)], stdout=subprocess.PIPE, text=True,
                            check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise CrdSchemaError(f"{FETCH_SCRIPT} failed with exit code {result.returncode}")
    directory = Path(lines[-1])
    missing = [name for name in FILES if not (directory / name).is_file()]
    if missing:
        raise CrdSchemaError(f"{FETCH_SCRIPT} printed {directory}, which lacks {missing}")
    return directory


__all__ = ["FILES", "CrdSchemaError", "find_crd_schemas"]
