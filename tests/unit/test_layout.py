"""The code's own boundaries: private APIs of dependencies are used in one module each.

The sub-package layering and the runner/operator independence are import-linter
contracts (pyproject.toml, run by ``make lint``); this checks what import-linter
cannot see: imports of a third-party package's private or internal modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

from support.wasm import REPO_ROOT

PACKAGES = [REPO_ROOT / "api", REPO_ROOT / "runner", REPO_ROOT / "operator"]
#: Internal module prefix -> the one module allowed to import it (relative to its root).
ALLOWED = {
    "wasmtime._": "edge_runner/wasm/capi.py",
    "uvicorn.protocols": "edge_runner/http/guard.py",
}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def sources() -> list[tuple[str, Path]]:
    return [(str(p.relative_to(root)), p) for root in PACKAGES for p in root.rglob("*.py")]


def test_private_modules_of_dependencies_are_used_in_one_place_each() -> None:
    users: dict[str, set[str]] = {prefix: set() for prefix in ALLOWED}
    for name, path in sources():
        for module in imports(path):
            for prefix in ALLOWED:
                if module.startswith(prefix):
                    users[prefix].add(name)
    assert users == {prefix: {owner} for prefix, owner in ALLOWED.items()}


def test_no_module_is_longer_than_600_lines() -> None:
    long = {name: n for name, p in sources() if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}
