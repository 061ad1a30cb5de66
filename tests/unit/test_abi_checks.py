"""The load-time ABI checks the operator and the runner share (edge_api.abi), on real modules."""

from __future__ import annotations

import pytest
import wasmtime

from edge_api.abi import ModuleRejected, check_module, compile_module, validate
from support.wasm import wat_to_wasm

EDGE_EXPORTS = """
  (memory (export "memory") 1)
  (func (export "edge_alloc") (param i32) (result i32) (i32.const 0))
  (func (export "edge_handle") (param i32 i32) (result i64) (i64.const 0))
"""


def edge(extra: str = "") -> bytes:
    return wat_to_wasm(f"(module {extra} {EDGE_EXPORTS})")


def rejected(wasm: bytes, abi: str = "edge") -> ModuleRejected:
    with pytest.raises(ModuleRejected) as caught:
        validate(wasm, abi)
    return caught.value


def test_a_fitting_module_gets_its_sha256_digest() -> None:
    assert validate(edge(), "edge").startswith("sha256:")
    assert validate(edge('(func (export "_initialize"))'), "edge").startswith("sha256:")
    assert validate(wat_to_wasm('(module (func (export "_start")))'), "wagi")


def test_imports_other_than_wasi_are_refused_naming_the_import() -> None:
    error = rejected(edge('(import "env" "secret" (func))'))
    assert error.reason == "ImportNotAllowed"
    assert "env.secret" in str(error)


def test_missing_exports_and_wrong_signatures_are_named() -> None:
    no_memory = wat_to_wasm("(module (func (export \"edge_alloc\") (param i32) (result i32)"
                            " (i32.const 0)))")
    assert rejected(no_memory).reason == "MissingExport"
    wrong = wat_to_wasm('(module (memory (export "memory") 1)'
                        ' (func (export "edge_alloc") (param i32) (result i32) (i32.const 0))'
                        ' (func (export "edge_handle") (param i32) (result i64) (i64.const 0)))')
    error = rejected(wrong)
    assert (error.reason, str(error)) == ("BadSignature", "export `edge_handle` must be"
                                          " (i32, i32) -> (i64)")


@pytest.mark.parametrize("initialize", [
    '(func (export "_initialize") (param i32 i32 i32))',
    '(func (export "_initialize") (result i64) (i64.const 0))',
    '(global (export "_initialize") i32 (i32.const 0))',
])
def test_an_initialize_that_is_not_unit_to_unit_is_refused(initialize: str) -> None:
    # The host calls _initialize with no argument slots: any other type would make it
    # read or write past them.
    error = rejected(edge(initialize))
    assert (error.reason, str(error)) == ("BadSignature", "export `_initialize` must be () -> ()")


def test_bytes_that_do_not_compile_are_a_compile_error() -> None:
    assert rejected(b"\0asm\x01\0\0\0garbage").reason == "CompileError"


@pytest.mark.parametrize(("wasm", "message"), [
    (b"", "not a WebAssembly binary: the module is empty"),
    (b"(module)", "not a WebAssembly binary: it looks like WebAssembly text (.wat);"
                  " assemble it into a binary first"),
    (b"\n  ;; a comment\n(module)", "not a WebAssembly binary: it looks like WebAssembly text"
                                    " (.wat); assemble it into a binary first"),
    (b"password=hunter2", "not a WebAssembly binary: 16 bytes that do not start with \\0asm;"
                          " is the path or key right?"),
    (b"x(module)", "not a WebAssembly binary: 9 bytes that do not start with \\0asm;"
                   " is the path or key right?"),
], ids=["empty", "text", "text-after-blanks", "other", "other-then-paren"])
def test_bytes_that_are_no_binary_module_say_what_they_look_like(wasm: bytes, message: str
                                                                 ) -> None:
    error = rejected(wasm)
    assert (error.reason, str(error)) == ("NotWebAssembly", message)
    assert b"hunter2".decode() not in str(error)  # the bytes are never quoted


def test_every_refusal_names_what_is_missing_or_wrong() -> None:
    compile_error = rejected(b"\0asm\x01\0\0\0garbage")
    assert str(compile_error).startswith("module does not compile: ")
    no_memory = wat_to_wasm(
        '(module (func (export "edge_alloc") (param i32) (result i32) (i32.const 0))'
        ' (func (export "edge_handle") (param i32 i32) (result i64) (i64.const 0)))')
    error = rejected(no_memory)
    assert (error.reason, str(error)) == ("MissingExport", "edge functions must export `memory`")
    assert validate(wat_to_wasm('(module (func (export "_start")))'), "wagi")  # wagi: none
    no_handle = wat_to_wasm('(module (memory (export "memory") 1)'
                            ' (func (export "edge_alloc") (param i32) (result i32) (i32.const 0)))')
    error = rejected(no_handle)
    assert (error.reason, str(error)) == (
        "MissingExport", "edge functions must export function `edge_handle`")
    error = rejected(wat_to_wasm("(module)"), "wagi")
    assert (error.reason, str(error)) == ("MissingExport", "wagi functions must export function"
                                          " `_start`")


def test_the_check_tells_whether_there_is_an_initializer_to_call() -> None:
    engine = wasmtime.Engine()
    assert check_module(compile_module(engine, edge()), "edge") is False
    assert check_module(compile_module(engine, edge('(func (export "_initialize"))')),
                        "edge") is True
