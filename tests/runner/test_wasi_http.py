"""``abi: wasi-http`` against real runner processes, with components built by real toolchains.

Guests (tests/support/components.py): a small hand-written component-model WAT
guest, a componentize-py one and a componentize-js (jco's WIT) one.  Each is
served standalone from a manifests folder.  The contract is docs/abi.md and
docs/http.md: GET with query and headers, a 1 MB body echoed, limits (504
timeout, 502 memory), a guest that never answers is 502, outgoing HTTP and
files are refused inside the guest, only ``spec.env`` is visible, and a
broken module gets a clear error while the runner keeps serving the rest.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from support import components
from support.guests import constant_wat, write_function
from support.runner import RunnerProcess

MiB = 2**20
#: A disk cache shared by these tests' runners: the componentize-py component takes
#: ~15 s to compile, once (the runner's own module cache, --cache-dir).
MODULE_CACHE = components.CACHE / "test-module-cache"


@contextlib.contextmanager
def _runner(manifests: Path) -> Iterator[RunnerProcess]:
    """A runner that may take minutes to get ready (a first compile of an 18 MB component)."""
    MODULE_CACHE.mkdir(parents=True, exist_ok=True)
    runner = RunnerProcess(manifests, extra_args=["--cache-dir", str(MODULE_CACHE)])
    try:
        runner.start(wait_ready=False)
        runner.wait_ready(timeout=240.0)
        yield runner
    finally:
        runner.stop()


def _assert_echoes(runner: RunnerProcess, path: str) -> None:
    """A 1 MiB POST to ``path`` comes back as it was sent, with its content type."""
    body = os.urandom(MiB)
    posted = runner.client.post(path, content=body,
                                headers={"content-type": "application/x-test"})
    assert posted.status_code == 200
    assert posted.headers["content-type"] == "application/x-test"
    assert posted.content == body


def _problem(response: httpx.Response) -> str:
    kind = response.json()["type"]
    assert isinstance(kind, str)
    return kind.rsplit("/", 1)[-1]


def test_small_component_serves_get_post_and_maps_errors(manifest_dir: Path) -> None:
    wasm = components.echo_component()
    cases: list[tuple[str, dict[str, object]]] = [
        ("echo", {}), ("loop", {"timeout": "200ms"}), ("grow", {"memory": "4Mi"}), ("none", {}),
    ]
    for name, limits in cases:
        write_function(manifest_dir, name, wasm, path=f"/{name}", abi="wasi-http",
                       path_type="Prefix", limits=limits)
    with _runner(manifest_dir) as runner:
        got = runner.client.get("/echo/a/b?x=1&y=%20", headers={"x-probe": "probe value"})
        assert got.status_code == 200, got.text
        assert got.headers["x-path"] == "/echo/a/b?x=1&y=%20"
        assert got.headers["x-probe"] == "probe value"
        assert got.content == b""

        body = os.urandom(MiB)
        posted = runner.client.post("/echo", content=body)
        assert posted.status_code == 200
        assert posted.content == body

        slow = runner.client.get("/loop")
        assert (slow.status_code, _problem(slow)) == (504, "timeout")
        hog = runner.client.get("/grow")
        assert hog.status_code == 502
        silent = runner.client.get("/none")
        assert (silent.status_code, _problem(silent)) == (502, "bad-response")
        assert "without setting a response" in silent.json()["detail"]

        # Concurrent requests on the worker threads each see only their own request
        # (a 503 is the runner's answer when no slot frees up in time on a busy machine).
        def probe(n: int) -> tuple[int, int, str | None, bytes]:
            answer = httpx.post(f"{runner.url}/echo/{n}", content=b"%d" % n,
                                headers={"x-probe": str(n)}, timeout=10.0)
            return n, answer.status_code, answer.headers.get("x-probe"), answer.content

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(probe, range(32)))
        assert {status for _, status, _, _ in answers} <= {200, 503}, answers
        served = [(n, seen, content) for n, status, seen, content in answers if status == 200]
        assert served == [(n, str(n), b"%d" % n) for n, _, _ in served]
        assert len(served) >= 16, answers

        # Still serving after every failure.
        again = runner.client.get("/echo", headers={"x-probe": "again"})
        assert (again.status_code, again.headers.get("x-probe")) == (200, "again"), again.text


def test_wrong_kind_of_binary_is_refused_with_a_clear_error(manifest_dir: Path) -> None:
    write_function(manifest_dir, "core", constant_wat(b"core"), abi="wasi-http")
    write_function(manifest_dir, "comp", components.echo_component(), abi="edge")
    write_function(manifest_dir, "ok", components.echo_component(), abi="wasi-http")
    with _runner(manifest_dir) as runner:
        functions = runner.functions()
        assert functions["core"]["state"] == "error"
        assert str(functions["core"]["error"]).startswith("NotAComponent:")
        assert functions["comp"]["state"] == "error"
        assert str(functions["comp"]["error"]).startswith("WrongAbi:")
        assert runner.client.get("/ok").status_code == 200


@pytest.mark.slow
def test_componentize_py_guest(manifest_dir: Path) -> None:
    wasm = components.py_component()
    manifest = write_function(manifest_dir, "py", wasm, path="/py", abi="wasi-http",
                              path_type="Prefix", limits={"timeout": "3s", "memory": "96Mi"})
    documents = list(yaml.safe_load_all(manifest.read_text()))
    documents[0]["spec"]["env"] = [{"name": "GREETING", "value": "hello there"}]
    manifest.write_text(yaml.safe_dump_all(documents))
    with _runner(manifest_dir) as runner:
        got = runner.client.get("/py/a?x=1", headers={"x-probe": "p1"})
        assert got.status_code == 200, got.text
        assert got.text.splitlines() == ["GET", "/py/a?x=1", "p1", "hello there"]
        assert got.headers["x-guest"] == "componentize-py"

        _assert_echoes(runner, "/py/echo")

        assert runner.client.get("/py/outgoing").text == "refused: ErrorCode_HttpRequestDenied"
        assert runner.client.get("/py/file").text.startswith("refused: ")
        assert runner.client.get("/py/env").text == "GREETING=hello there\n"

        silent = runner.client.get("/py/none")
        assert (silent.status_code, _problem(silent)) == (502, "bad-response")
        spin = runner.client.get("/py/spin")
        assert (spin.status_code, _problem(spin)) == (504, "timeout")
        hog = runner.client.get("/py/hog")
        assert hog.status_code == 502
        assert runner.client.get("/py/a").status_code == 200


@pytest.mark.slow
def test_componentize_js_guest(manifest_dir: Path) -> None:
    wasm = components.js_component()
    write_function(manifest_dir, "js", wasm, path="/js", abi="wasi-http", path_type="Prefix",
                   limits={"timeout": "3s"})
    with _runner(manifest_dir) as runner:
        got = runner.client.get("/js/a?x=1", headers={"x-probe": "p2"})
        assert got.status_code == 200, got.text
        assert got.text.splitlines() == ["GET", "/js/a?x=1", "p2"]
        assert got.headers["x-guest"] == "componentize-js"

        _assert_echoes(runner, "/js/echo")

        assert runner.client.get("/js/outgoing").text.startswith("refused: ")
        spin = runner.client.get("/js/spin")
        assert (spin.status_code, _problem(spin)) == (504, "timeout")
        assert runner.client.get("/js/a").status_code == 200
