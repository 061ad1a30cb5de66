"""What a module must look like for its ABI (docs/abi.md), checked with wasmtime.

Shared: the operator validates modules before publishing them (ModuleValid
condition) and the runner checks them again at load, with the same rules and
the same messages.  Pure apart from compiling with the given engine.
"""

from __future__ import annotations

import hashlib

import wasmtime
import wasmtime.component

#: Imports a guest may have: WASI preview 1, nothing else.
ALLOWED_IMPORT_MODULE = "wasi_snapshot_preview1"

#: The first four bytes of every WebAssembly binary module.
WASM_MAGIC = b"\0asm"
#: The version and layer fields after the magic: a core module, or a component.
CORE_LAYER = b"\x01\0\0\0"
COMPONENT_LAYER = b"\x0d\0\x01\0"

#: ABIs whose functions are components (docs/abi.md), and the export they need.
COMPONENT_ABIS = frozenset({"wasi-http"})
HANDLER_EXPORT = "wasi:http/incoming-handler@0.2."
#: Interfaces a wasi-http component may import: the ``wasi:http/proxy`` world's
#: packages (calls the sandbox refuses still link, and fail when made).
COMPONENT_IMPORT_PACKAGES = ("wasi:cli/", "wasi:clocks/", "wasi:filesystem/", "wasi:http/",
                             "wasi:io/", "wasi:random/", "wasi:sockets/")

#: Exported functions each ABI needs, with their exact signatures.
EXPORTS: dict[str, dict[str, tuple[list[str], list[str]]]] = {
    "edge": {"edge_alloc": (["i32"], ["i32"]), "edge_handle": (["i32", "i32"], ["i64"])},
    "wagi": {"_start": ([], [])},
}


class ModuleRejected(ValueError):
    """The module does not compile or does not fit its ABI; ``reason`` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_binary(wasm: bytes) -> None:
    """Refuse bytes that are not a WebAssembly binary, before any parser sees them.

    wasmtime also accepts the text format, and its message for other bytes is
    the text parser's (``expected `(` --> <anon>:1:1``); this one says what is
    wrong without quoting the bytes (they may be anything, even a secret).
    """
    if wasm.startswith(WASM_MAGIC):
        return
    if not wasm:
        hint = "the module is empty"
    elif wasm.lstrip()[:1] in (b"(", b";"):
        hint = "it looks like WebAssembly text (.wat); assemble it into a binary first"
    else:
        hint = f"{len(wasm)} bytes that do not start with \\0asm; is the path or key right?"
    raise ModuleRejected("NotWebAssembly", f"not a WebAssembly binary: {hint}")


def is_component(wasm: bytes) -> bool:
    """The binary is a component (component-model layer), not a core module."""
    return wasm[4:8] == COMPONENT_LAYER


def compile_component(engine: wasmtime.Engine, wasm: bytes) -> wasmtime.component.Component:
    check_binary(wasm)
    if not is_component(wasm):
        raise ModuleRejected(
            "NotAComponent",
            "wasi-http functions must be components (a core module was given; build with"
            " componentize-py, jco or `wasm-tools component new`)",
        )
    try:
        return wasmtime.component.Component(engine, wasm)
    except wasmtime.WasmtimeError as exc:
        raise ModuleRejected("CompileError", f"component does not compile: {exc}") from exc


def check_component(
    component: wasmtime.component.Component, engine: wasmtime.Engine, abi: str
) -> None:
    """Raise :class:`ModuleRejected` unless ``component`` fits ``abi`` (``wasi-http``)."""
    kind = component.type
    for name in kind.imports(engine):
        if not name.startswith(COMPONENT_IMPORT_PACKAGES):
            raise ModuleRejected(
                "ImportNotAllowed",
                f"import {name} is not granted to {abi} functions (only the wasi:http/proxy"
                " world is)",
            )
    if not any(name.startswith(HANDLER_EXPORT) for name in kind.exports(engine)):
        raise ModuleRejected(
            "MissingExport", f"{abi} components must export wasi:http/incoming-handler@0.2.x"
        )


def compile_module(engine: wasmtime.Engine, wasm: bytes) -> wasmtime.Module:
    check_binary(wasm)
    if is_component(wasm):
        raise ModuleRejected(
            "WrongAbi", "this is a component; serve it with `abi: wasi-http`"
        )
    try:
        return wasmtime.Module(engine, wasm)
    except wasmtime.WasmtimeError as exc:
        raise ModuleRejected("CompileError", f"module does not compile: {exc}") from exc


def check_module(module: wasmtime.Module, abi: str) -> bool:
    """Raise :class:`ModuleRejected` unless ``module`` fits ``abi``; returns has-``_initialize``."""
    for imp in module.imports:
        if imp.module != ALLOWED_IMPORT_MODULE:
            raise ModuleRejected(
                "ImportNotAllowed",
                f"import {imp.module}.{imp.name} is not granted to {abi} functions"
                f" (only {ALLOWED_IMPORT_MODULE} is)",
            )
    exports = {exp.name: exp.type for exp in module.exports}
    if abi == "edge" and not isinstance(exports.get("memory"), wasmtime.MemoryType):
        raise ModuleRejected("MissingExport", "edge functions must export `memory`")
    for name, (params, results) in EXPORTS[abi].items():
        ty = exports.get(name)
        if not isinstance(ty, wasmtime.FuncType):
            raise ModuleRejected("MissingExport", f"{abi} functions must export function `{name}`")
        got = ([str(p) for p in ty.params], [str(r) for r in ty.results])
        if got != (params, results):
            raise ModuleRejected(
                "BadSignature",
                f"export `{name}` must be ({', '.join(params)}) -> ({', '.join(results)})",
            )
    init = exports.get("_initialize")
    if init is None:
        return False
    # The host calls it through an unchecked call with no argument slots.
    if not isinstance(init, wasmtime.FuncType) or list(init.params) or list(init.results):
        raise ModuleRejected("BadSignature", "export `_initialize` must be () -> ()")
    return True


def validate(wasm: bytes, abi: str, engine: wasmtime.Engine | None = None) -> str:
    """Compile and check a module; returns its ``sha256:`` digest."""
    engine = engine or wasmtime.Engine()
    if abi in COMPONENT_ABIS:
        check_component(compile_component(engine, wasm), engine, abi)
    else:
        check_module(compile_module(engine, wasm), abi)
    return f"sha256:{hashlib.sha256(wasm).hexdigest()}"
