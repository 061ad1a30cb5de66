"""Function authoring and honest status, without a server: the scaffold (edge_runner.scaffold),
"not a WebAssembly binary" (edge_api.abi), routes to missing functions on the wire, in
standalone folders, in the cluster source and in the data plane's answer, the route summary
the operator reports, the CRDs' descriptions, object names in text logs, and the operator
registering no kopf handler that needs a finalizer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from edge_api import settings
from edge_api.abi import ModuleRejected, validate
from edge_api.logs import JsonFormatter, TextFormatter
from edge_api.models import EdgeRouteSpec
from edge_api.routing import build_table
from edge_api.wire import parse_configmap, route_configmap
from edge_operator.conditions import Want
from edge_operator.routes import missing_functions, route_url, summary
from edge_operator.status import route_status
from edge_runner import cli, scaffold
from edge_runner.sources.cluster import _Desired
from edge_runner.sources.manifests import load_folder
from edge_runner.wasm.engine import WasmEngine
from support import guests
from support.inprocess import (
    PROBLEM_BASE,
    RecordingExecutor,
    route,
    serving,
    source,
)
from support.wasm import REPO_ROOT, wat_to_wasm

CRDS = sorted((REPO_ROOT / "crds").glob("*.yaml"))
EDGE = wat_to_wasm(guests.constant_wat(b"ok"))


# -- not a WebAssembly binary ----------------------------------------------------------------


@pytest.mark.parametrize(("data", "hint"), [
    (b"", "the module is empty"),
    (b'(module (memory (export "memory") 1))', "WebAssembly text (.wat)"),
    (b"SECRET=hunter2\nmore", "19 bytes that do not start with \\0asm"),
])
def test_bytes_that_are_not_wasm_say_so_without_quoting_them(data: bytes, hint: str) -> None:
    with pytest.raises(ModuleRejected) as caught:
        validate(data, "edge")
    assert caught.value.reason == "NotWebAssembly"
    message = str(caught.value)
    assert message.startswith("not a WebAssembly binary: ") and hint in message
    assert "hunter2" not in message and "expected `(`" not in message


def test_wasm_with_a_broken_body_is_still_a_compile_error() -> None:
    with pytest.raises(ModuleRejected) as caught:
        validate(b"\x00asm\x01\x00\x00\x00garbage", "edge")
    assert caught.value.reason == "CompileError"


# -- the route wire: which functions are missing -------------------------------------------


def test_route_configmap_carries_the_missing_functions() -> None:
    spec = EdgeRouteSpec.model_validate({"rules": [
        {"match": {"path": "/a"}, "function": "a"},
        {"match": {"path": "/b"}, "backends": [{"function": "b"}, {"function": "a"}]}]})
    assert spec.function_names() == ["a", "b"]
    configmap = route_configmap(name="r", namespace="ns", spec=spec, missing=["b"])
    parsed = parse_configmap(configmap)
    assert getattr(parsed, "missing", None) == frozenset({"b"})
    del configmap["data"]["missing.json"]  # written by an operator that does not check
    assert getattr(parse_configmap(configmap), "missing", "") is None


def test_cluster_source_pending_versus_missing() -> None:
    """A function a route names with no ConfigMap yet is pending (503, retry) unless the
    operator said it does not exist (no entry: 500)."""
    spec = EdgeRouteSpec.model_validate({"rules": [
        {"match": {"path": "/a"}, "function": "later"},
        {"match": {"path": "/b"}, "function": "gone"}]})
    desired = _Desired()
    desired.replace_all([route_configmap(name="r", namespace="ns", spec=spec, missing=["gone"])])
    functions = {f.name: f for f in desired.state().functions}
    assert set(functions) == {"later"}
    assert "not published by the operator yet" in str(functions["later"].error)


def test_cluster_source_serves_the_older_route_of_a_conflict() -> None:
    """The operator writes each route's creationTimestamp; runners order routes by it."""
    def spec(function: str) -> EdgeRouteSpec:
        return EdgeRouteSpec.model_validate({"rules": [{"match": {"path": "/x"},
                                                        "function": function}]})
    desired = _Desired()
    desired.replace_all([
        route_configmap(name="a-new", namespace="ns", spec=spec("new"),
                        created="2026-01-01T00:00:09Z"),
        route_configmap(name="b-old", namespace="ns", spec=spec("old"),
                        created="2026-01-01T00:00:01Z"),
    ])
    table = build_table(desired.state().routes)
    [conflict] = table.conflicts
    assert (conflict.kept, conflict.dropped) == ("b-old/0", "a-new/0")


# -- standalone folders ------------------------------------------------------------------------


def _write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


FUNCTION = """apiVersion: edgerunner.dev/v1alpha1
kind: EdgeFunction
metadata: {{name: {name}}}
spec: {{source: {source}}}
"""
ROUTE = """apiVersion: edgerunner.dev/v1alpha1
kind: EdgeRoute
metadata: {{name: {name}}}
spec: {{rules: [{{match: {{path: /{name}}}, function: {function}}}]}}
"""


def test_cluster_only_definitions_never_break_standalone(tmp_path: Path) -> None:
    """The old sample layout: a cluster copy next to manifests/ no longer makes the
    function 'defined twice' (cluster-function.yaml sorts before manifests/)."""
    (tmp_path / "hello.wasm").write_bytes(EDGE)
    _write(tmp_path, "cluster-function.yaml",
           FUNCTION.format(name="hello", source="{configMapRef: {name: hello-module}}"))
    _write(tmp_path / "manifests", "function.yaml",
           FUNCTION.format(name="hello", source="{path: ../hello.wasm}"))
    _write(tmp_path / "manifests", "route.yaml", ROUTE.format(name="hello", function="hello"))
    _write(tmp_path, "kustomization.yaml", "resources: [manifests/function.yaml]\n")
    state = load_folder(tmp_path)
    assert state.errors == []
    [function] = state.functions
    assert (function.origin, function.error, function.wasm) == (
        "manifests/function.yaml#1", None, EDGE)


def test_the_samples_folder_serves_every_sample_without_errors() -> None:
    state = load_folder(REPO_ROOT / "functions")
    names = sorted(f.name for f in state.functions)
    assert names == ["constant", "hello-world", "wagi-hello"]
    assert [e for e in state.errors if "defined" in e] == []


def test_standalone_reports_routes_to_undefined_functions_and_non_wasm(tmp_path: Path) -> None:
    (tmp_path / "text.wasm").write_text("(module)")
    _write(tmp_path, "f.yaml", FUNCTION.format(name="text", source="{path: text.wasm}"))
    _write(tmp_path, "r.yaml", ROUTE.format(name="ghost", function="nobody"))
    state = load_folder(tmp_path)
    assert state.errors == ["EdgeRoute ghost: no EdgeFunction nobody is defined in the folder;"
                            " its requests get 500"]
    [text] = state.functions
    assert text.wasm is None and "NotWebAssembly: not a WebAssembly binary" in str(text.error)


# -- the data plane's answer ----------------------------------------------------------------------


def test_missing_function_is_final_and_load_errors_stay_private(
        engine: WasmEngine, executor: RecordingExecutor) -> None:
    functions = [source("broken", b"\x00asm\x01\x00\x00\x00\x05")]
    routes = [route("ghost", "/ghost", "ghost"), route("broken", "/broken", "broken")]

    async def scenario() -> list[httpx.Response]:
        async with serving(engine, executor, functions, routes) as (app, _), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://edge.test") as client:
            return [await client.get("/ghost"), await client.get("/broken")]

    ghost, broken = asyncio.run(scenario())
    assert ghost.status_code == 500 and "retry-after" not in ghost.headers
    document = ghost.json()
    assert (document["type"], document["title"], document["function"]) == (
        PROBLEM_BASE + "function-not-found", "Function not found", "ghost")
    assert broken.status_code == 503 and broken.headers["retry-after"] == "5"
    assert broken.json()["type"] == PROBLEM_BASE + "not-loaded"
    assert "CompileError" not in broken.text and "compile" not in broken.json()["detail"]


# -- what the operator reports on routes ------------------------------------------------------


def _spec(hosts: list[str], path: str = "/hello") -> EdgeRouteSpec:
    return EdgeRouteSpec.model_validate(
        {"hosts": hosts, "rules": [{"match": {"path": path}, "function": "hello-world"}]})


@pytest.mark.parametrize(("hosts", "public", "url"), [
    ([], None, None),
    ([], "http://localhost:8080", "http://localhost:8080/hello"),
    ([], "https://edge.example.com/base/", "https://edge.example.com/base/hello"),
    (["*.example.com", "hello.example.com"], "https://x.example.com", "https://hello.example.com/hello"),
    (["*.example.com"], "https://x.example.com", None),
])
def test_route_url(hosts: list[str], public: str | None, url: str | None) -> None:
    assert route_url(_spec(hosts), public) == url


def test_route_summary_and_missing_functions() -> None:
    body = {"spec": {"rules": [{"match": {"path": "/a"}, "function": "f"},
                               {"match": {"path": "/b"}, "backends": [{"function": "g"}]},
                               {"match": {"path": "/a", "methods": ["POST"]}, "function": "f"}]}}
    assert summary(body, None) == {"paths": "/a,/b", "functions": "f,g"}
    assert summary({"spec": {"rules": []}}, None) == {}
    assert missing_functions(EdgeRouteSpec.model_validate(body["spec"]), {"f"}) == ["g"]


def test_route_status_owns_the_summary_fields() -> None:
    ready = Want("Ready", False, "FunctionNotFound", "no EdgeFunction g")
    status = route_status(None, ready, 1, {"paths": "/a", "functions": "g"})
    assert status is not None and status["paths"] == "/a"
    assert status["conditions"][0]["reason"] == "FunctionNotFound"
    assert route_status(status, ready, 1, {"paths": "/a", "functions": "g"}) is None
    # A field the writer no longer sends (the URL once known) is written away.
    with_url = {**status, "url": "http://h/a"}
    assert route_status(with_url, ready, 1, {"paths": "/a", "functions": "g"}) is not None
    with pytest.raises(ValueError, match="not fields"):
        route_status(None, ready, 1, {"digest": "x"})


# -- the CRDs teach the API (kubectl explain) --------------------------------------------------


def _properties(schema: dict[str, Any], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, child in (schema.get("properties") or {}).items():
        if name in ("apiVersion", "kind", "metadata"):
            continue
        yield f"{where}.{name}", child
        yield from _properties(child, f"{where}.{name}")
    if "items" in schema:
        yield from _properties(schema["items"], f"{where}[]")


@pytest.mark.parametrize("crd", CRDS, ids=lambda p: p.name)
def test_every_crd_field_is_described_with_its_default(crd: Path) -> None:
    document = yaml.safe_load(crd.read_text())
    schema = document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    fields = list(_properties(schema, document["spec"]["names"]["kind"]))
    assert len(fields) > 20
    undescribed = [where for where, child in fields if not str(child.get("description", ""))]
    assert undescribed == []
    for where, child in fields:
        if "default" in child and child["default"] != {}:
            assert "Default" in child["description"], f"{where}: the default is not described"
    assert (REPO_ROOT / "charts" / "edge-runner" / "crds" / crd.name).read_bytes() == \
        crd.read_bytes()


# -- text logs name the object ---------------------------------------------------------------


def _record(**extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("kopf.objects", logging.WARNING, "x", 1, "Handler failed", None,
                               None)
    record.__dict__.update(extra)
    return record


def test_text_and_json_logs_name_the_object() -> None:
    kopf_record = _record(k8s_ref={"kind": "EdgeFunction", "namespace": "edge",
                                   "name": "hello"}, settings=object(), k8s_skip=False)
    line = TextFormatter().format(kopf_record)
    assert "[EdgeFunction edge/hello] Handler failed" in line and "settings" not in line
    ours = TextFormatter().format(_record(object="edge/r", kind="EdgeRoute", reason="X"))
    assert "[EdgeRoute edge/r] Handler failed reason=X" in ours
    assert '"object": "edge/hello"' in JsonFormatter().format(kopf_record)


# -- no finalizers ----------------------------------------------------------------------------


def test_the_operator_registers_nothing_that_needs_a_finalizer() -> None:
    """kopf adds a finalizer for timers, daemons and non-optional deletion handlers; one left
    by an uninstalled operator blocks deleting the objects and the CRDs."""
    from edge_operator.handlers import registry

    assert list(registry._spawning.get_all_handlers()) == []
    assert not any(getattr(h, "requires_finalizer", False)
                   for h in registry._changing.get_all_handlers())


# -- the scaffold -----------------------------------------------------------------------------


def test_the_hello_world_sample_has_the_scaffold_layout() -> None:
    written = scaffold.files("hello-world", sdk_dependency='edge-sdk = { path = "x" }')
    sample = REPO_ROOT / "functions" / "hello-world"
    assert written["kustomization.yaml"] == (sample / "kustomization.yaml").read_text()
    assert not (sample / "cluster-function.yaml").exists()


def test_new_writes_a_crate_and_refuses_to_overwrite(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["new", "my-fn", "--dir", str(tmp_path), "--path", "/hi"]) == 0
    crate = tmp_path / "my-fn"
    assert sorted(str(p.relative_to(crate)) for p in crate.rglob("*") if p.is_file()) == [
        ".gitignore", "Cargo.toml", "README.md", "kustomization.yaml",
        "manifests/function.yaml", "manifests/route.yaml", "src/lib.rs"]
    cargo = (crate / "Cargo.toml").read_text()
    assert '[package]\nname = "my-fn"' in cargo and 'name = "my_fn"' in cargo
    assert f'edge-sdk = {{ path = "{scaffold.SDK_DIR}" }}' in cargo and "[workspace]" in cargo
    assert "path: ../my_fn.wasm" in (crate / "manifests" / "function.yaml").read_text()
    assert "path: /hi" in (crate / "manifests" / "route.yaml").read_text()
    assert "edge-runner build" in capsys.readouterr().out
    assert cli.main(["new", "my-fn", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["new", "My_Fn", "--dir", str(tmp_path)]) == 2


def test_sdk_dependency_forms(tmp_path: Path) -> None:
    assert scaffold.sdk_dependency("git+https://example.com/edge-runner.git#abc123") == \
        'edge-sdk = { git = "https://example.com/edge-runner.git", rev = "abc123" }'
    assert scaffold.sdk_dependency("git+file:///srv/edge-runner") == \
        'edge-sdk = { git = "file:///srv/edge-runner" }'
    with pytest.raises(scaffold.ScaffoldError, match="no edge-sdk"):
        scaffold.sdk_dependency(str(tmp_path))
    with pytest.raises(scaffold.ScaffoldError, match="git\\+URL"):
        scaffold.sdk_dependency("git+nowhere")


def test_build_needs_a_crate(tmp_path: Path) -> None:
    parsed = settings.parse(scaffold.BuildOptions, [str(tmp_path)])
    assert isinstance(parsed, str) and "has no Cargo.toml" in parsed


def test_usage_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {command} " in out for command in cli.COMMANDS)
    assert cli.main(["deploy"]) == 2
