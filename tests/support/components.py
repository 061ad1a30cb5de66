"""Build wasi-http components for tests with the real toolchains (docs/sdk.md).

* :func:`echo_component`: tests/components/echo/echo.wat, a small hand-written
  component-model guest, assembled by wasmtime's own text parser.
* :func:`py_component`: tests/components/pyecho/app.py built by componentize-py
  (PyPI, pinned in tests/components/pyecho/requirements.txt) against the
  ``wasi:http`` WIT that the ``wasi`` crate ships (crates.io, pinned below,
  fetched by Debian's cargo as functions/build.sh fetches crates).
* :func:`js_component`: tests/components/jsecho/app.js built by componentize-js
  with the WIT that jco ships (npm; package.json and package-lock.json beside
  the app, installed with ``npm ci``).  The ``componentize-js`` command is used
  rather than ``jco componentize``: jco 1.35's bundled wasm-tools reads the WIT
  through a WASI shim that has no preopened directory and fails with "failed to
  get path metadata".

Tools and built components are cached outside the repo under
``~/.cache/edge-runner/`` (``EDGE_TOOL_CACHE`` overrides; tool venvs by
version, components by the sha256 of everything that goes into them), so only
the first run pays: a componentize-py
build takes ~10 s, its 18 MB component ~15 s to compile in the runner (the
runner's own disk cache, not this one, saves that).  Builds hold a file lock, so
parallel test processes build each thing once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from support.wasm import REPO_ROOT, wat_to_wasm

COMPONENTS = REPO_ROOT / "tests" / "components"
#: Root of the tool venvs, node_modules, fetched WIT and built components.
CACHE = Path(os.environ.get("EDGE_TOOL_CACHE") or Path(
    os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-runner")
#: componentize-py's version is the one pinned in its requirements file.
PY_REQUIREMENTS = COMPONENTS / "pyecho" / "requirements.txt"
#: The ``wasi`` crate whose package carries the WASI 0.2 WIT (wit/deps/http, io, ...).
WASI_CRATE = "wasi"
WASI_CRATE_VERSION = "0.13.3+wasi-0.2.2"
BUILD_TIMEOUT = 900.0


class ComponentBuildError(RuntimeError):
    """A toolchain failed; the message carries its output."""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
         ) -> None:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT, check=False)
    if done.returncode != 0:
        raise ComponentBuildError(
            f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-4000:]}"
            f"\n{done.stderr[-4000:]}")


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:24]


def echo_component() -> bytes:
    """The hand-written WAT component (assembled in milliseconds; not cached)."""
    return wat_to_wasm((COMPONENTS / "echo" / "echo.wat").read_text())


def componentize_py() -> Path:
    """The componentize-py executable, in its own venv (installed on first use)."""
    pinned = PY_REQUIREMENTS.read_text()
    version = pinned.strip().split("==")[1]
    home = CACHE / "componentize-py" / version
    tool = home / "venv" / "bin" / "componentize-py"
    with _locked(home / ".lock"):
        if not tool.exists():
            _run([sys.executable, "-m", "venv", str(home / "venv")])
            _run([str(home / "venv" / "bin" / "pip"), "install", "-q", "-r",
                  str(PY_REQUIREMENTS)])
    return tool


def wasi_wit() -> Path:
    """A WIT folder with ``wasi:http`` and its deps, from the ``wasi`` crate.

    Fetched like the crates of functions/build.sh: Debian's cargo (1.65) vendors
    through the sparse index (unstable there, hence ``RUSTC_BOOTSTRAP``), with
    its home in ``~/.cache/edge-runner/cargo``.
    """
    home = CACHE / "wasi-wit" / WASI_CRATE_VERSION
    wit = home / "wit"
    with _locked(home / ".lock"):
        if not (wit / "proxy.wit").exists():
            with tempfile.TemporaryDirectory() as scratch:
                project = Path(scratch)
                (project / "src").mkdir()
                (project / "src" / "lib.rs").write_text("")
                (project / "Cargo.toml").write_text(
                    '[package]\nname = "wit-fetch"\nversion = "0.0.0"\nedition = "2021"\n'
                    f'[dependencies]\n{WASI_CRATE} = "={WASI_CRATE_VERSION}"\n')
                cargo = os.environ.get("EDGE_CARGO", "/usr/bin/cargo")
                environment = {
                    "PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "RUSTC_BOOTSTRAP": "1",
                    "CARGO_HOME": os.environ.get("EDGE_CARGO_HOME", str(CACHE / "cargo")),
                }
                _run([cargo, "-Z", "sparse-registry", "vendor", "--quiet", "vendor"],
                     cwd=project, env=environment)
                deps = project / "vendor" / WASI_CRATE / "wit" / "deps"
                staging = home / "staging"
                shutil.rmtree(staging, ignore_errors=True)
                shutil.copytree(deps, staging / "deps", ignore=shutil.ignore_patterns("http"))
                for source in (deps / "http").glob("*.wit"):
                    shutil.copy(source, staging / source.name)
            shutil.rmtree(wit, ignore_errors=True)
            staging.rename(wit)
    return wit


def jco_toolchain() -> Path:
    """node_modules of tests/components/jsecho (``npm ci``, cached by the lock file's hash)."""
    folder = COMPONENTS / "jsecho"
    lock = (folder / "package-lock.json").read_bytes()
    home = CACHE / "jco" / _digest(lock)
    modules = home / "node_modules"
    with _locked(home / ".lock"):
        if not (modules / ".bin" / "componentize-js").exists():
            for name in ("package.json", "package-lock.json"):
                shutil.copy(folder / name, home / name)
            _run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=home)
    return modules


#: The wasi:http version whose incoming-handler componentize-js 0.23's StarlingMonkey
#: exports, and the WIT text jco ships for that 0.2 series.
JS_HTTP_VERSION = "0.2.10"
JCO_WIT = "@bytecodealliance/jco/lib/wit/builtin/0.2.12"


def js_wit(modules: Path) -> Path:
    """A WIT folder for componentize-js: jco's 0.2.12 text, labelled 0.2.10.

    All 0.2.x are compatible; the guest's world must name the exact version its
    engine exports, or componentize-js cannot find ``handle``.
    """
    target = modules.parent / f"wit-{JS_HTTP_VERSION}"
    if (target / "package.wit").exists():
        return target
    source = modules / JCO_WIT
    staging = modules.parent / "wit-staging"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "deps").mkdir(parents=True)
    for package in source.iterdir():
        if package.name == "wasi-http":
            for wit in package.glob("*.wit"):
                shutil.copy(wit, staging / wit.name)
        elif package.is_dir():
            shutil.copytree(package, staging / "deps" / package.name)
    for wit in staging.rglob("*.wit"):
        wit.write_text(wit.read_text().replace("@0.2.12", f"@{JS_HTTP_VERSION}")
                       .replace("version = 0.2.12", f"version = {JS_HTTP_VERSION}"))
    staging.rename(target)
    return target


def js_component(app: str = "jsecho") -> bytes:
    """tests/components/<app>/app.js built by componentize-js (cached by source hash)."""
    folder = COMPONENTS / app
    modules = jco_toolchain()
    key = _digest(*(p.read_bytes() for p in _sources(folder)))
    target = CACHE / "components" / f"{app}-{key}.wasm"
    with _locked(CACHE / "components" / f".{app}.lock"):
        if not target.exists():
            with _locked(modules.parent / ".lock"):
                wit = js_wit(modules)
            with tempfile.TemporaryDirectory() as scratch:
                output = Path(scratch) / "out.wasm"
                _run([str(modules / ".bin" / "componentize-js"), "--wit", str(wit),
                      "--world-name", "proxy", "-o", str(output), str(folder / "app.js")],
                     cwd=Path(scratch))
                partial = target.with_suffix(".partial")
                shutil.copyfile(output, partial)
                partial.rename(target)
    return target.read_bytes()


def _sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and "__pycache__" not in p.parts and "node_modules" not in p.parts)


def py_component(app: str = "pyecho") -> bytes:
    """tests/components/<app>/app.py built by componentize-py (cached by source hash)."""
    folder = COMPONENTS / app
    tool = componentize_py()
    wit = wasi_wit()
    key = _digest(PY_REQUIREMENTS.read_bytes(), WASI_CRATE_VERSION.encode(),
                  *(p.read_bytes() for p in _sources(folder)))
    target = CACHE / "components" / f"{app}-{key}.wasm"
    with _locked(CACHE / "components" / f".{app}.lock"):
        if not target.exists():
            with tempfile.TemporaryDirectory() as scratch:
                work = Path(scratch) / app
                shutil.copytree(folder, work)
                output = Path(scratch) / "out.wasm"
                _run([str(tool), "-d", str(wit), "-w", "wasi:http/proxy@0.2.2",
                      "componentize", "app", "-o", str(output)], cwd=work)
                partial = target.with_suffix(".partial")
                shutil.copyfile(output, partial)
                partial.rename(target)
    return target.read_bytes()
