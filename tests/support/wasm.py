"""Build real WebAssembly modules for tests.

* :func:`build_function` compiles a sample function under ``functions/`` from
  Rust source with ``functions/build.sh`` (Debian's ``rustc`` and its
  ``wasm32-wasi`` std) at most once per process and returns the artifact.
* :func:`wat_to_wasm` assembles WebAssembly text with wasmtime, for small
  hand-written guests (hostile, trapping, endless, malformed responses ...).
"""

from __future__ import annotations

import pathlib
import subprocess
import threading

import wasmtime

__all__ = [
    "FUNCTIONS_DIR",
    "REPO_ROOT",
    "WasmBuildError",
    "artifact_path",
    "build_function",
    "wat_to_wasm",
]

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
FUNCTIONS_DIR = REPO_ROOT / "functions"
BUILD_SCRIPT = FUNCTIONS_DIR / "build.sh"
BUILD_TIMEOUT_SECONDS = 600.0

_lock = threading.Lock()
_built: dict[str, pathlib.Path] = {}


class WasmBuildError(RuntimeError):
    """``functions/build.sh`` failed; the message carries its output."""


def artifact_path(name: str) -> pathlib.Path:
    """Where ``functions/build.sh`` puts the module of function ``name``."""
    return FUNCTIONS_DIR / name / (name.replace("-", "_") + ".wasm")


def build_function(name: str) -> pathlib.Path:
    """Build ``functions/<name>`` (once per process) and return its ``.wasm``.

    Later calls for the same name return the cached path without running
    cargo again. Raises :class:`WasmBuildError` with the build output if the
    toolchain is missing or compilation fails.
    """
    with _lock:
        cached = _built.get(name)
        if cached is not None:
            return cached
        if not (FUNCTIONS_DIR / name / "Cargo.toml").is_file():
            msg = f"no such function: {FUNCTIONS_DIR / name}"
            raise WasmBuildError(msg)
        cmd = ["bash", str(BUILD_SCRIPT), name]
        try:
            proc = subprocess.run(
                cmd,
                cwd=FUNCTIONS_DIR,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            msg = f"{' '.join(cmd)}: timed out after {BUILD_TIMEOUT_SECONDS:.0f}s"
            raise WasmBuildError(msg) from exc
        if proc.returncode != 0:
            output = proc.stdout + proc.stderr
            msg = f"{' '.join(cmd)}: exit {proc.returncode}\n{output}"
            raise WasmBuildError(msg)
        path = artifact_path(name)
        if not path.is_file():
            msg = f"{' '.join(cmd)}: succeeded but {path} is missing"
            raise WasmBuildError(msg)
        _built[name] = path
        return path


def wat_to_wasm(text: str) -> bytes:
    """Assemble WebAssembly text format into a binary module."""
    return bytes(wasmtime.wat2wasm(text))


def distinct(wasm: bytes, index: int) -> bytes:
    """The same module with a custom section naming ``index``: another digest."""
    name = b"edge-bench"
    payload = bytes([len(name)]) + name + index.to_bytes(4, "little")
    return wasm + b"\x00" + bytes([len(payload)]) + payload
