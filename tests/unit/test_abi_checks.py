"""The load-time ABI checks the operator and the runner share (edge_api.abi), on real modules."""

from __future__ import annotations

import pytest

from edge_api.abi import ModuleRejected, validate
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
