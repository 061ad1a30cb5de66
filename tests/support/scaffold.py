"""What the scaffold tests share: the ``edge-runner`` command of this venv and the
crates.io dependencies a scaffolded function adds (versions that build with rustc
1.63, as docs/sdk.md lists them)."""

from __future__ import annotations

import sys
from pathlib import Path

EDGE_RUNNER = Path(sys.executable).with_name("edge-runner")
#: serde_json and the versions of its dependencies that build with rustc 1.63.
JSON_DEPENDENCIES = """
serde_json = "=1.0.108"
serde = "=1.0.193"
itoa = "=1.0.9"
ryu = "=1.0.15"
"""


def add_json_dependencies(crate: Path) -> None:
    """Add :data:`JSON_DEPENDENCIES` to the crate's ``[dependencies]`` (once)."""
    cargo = crate / "Cargo.toml"
    text = cargo.read_text()
    if "serde_json = " not in text.replace("# serde_json", ""):
        cargo.write_text(text.replace("[dependencies]\n", "[dependencies]" + JSON_DEPENDENCIES, 1))
