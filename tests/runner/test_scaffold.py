"""A function crate made by ``edge-runner new`` outside the repository, with a crates.io
dependency, built by ``edge-runner build`` and served by a real standalone runner, which
reloads it when it is rebuilt (docs/functions.md).  Also: ``make run``'s folders.

The crate lives in pytest's temporary folder (never under the repository), and the
commands are the installed ``edge-runner`` script, as a user runs them.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from support.runner import REPO_ROOT, RunnerProcess, wait_until
from support.scaffold import EDGE_RUNNER, add_json_dependencies

pytestmark = pytest.mark.slow

JSON_HANDLER = """
use edge_sdk::{{Request, Response}};

fn handle(req: &Request) -> Response {{
    let name = req.query_param("name").unwrap_or_else(|| "world".into());
    let value = serde_json::json!({{"greeting": format!("{word}, {{}}!", name),
                                   "len": name.len()}});
    Response::json(200, value.to_string())
}}

edge_sdk::edge_main!(handle);
"""


def edge_runner(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(EDGE_RUNNER), *args], cwd=cwd, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, f"edge-runner {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result


def use_serde_json(crate: Path, word: str) -> None:
    """Add the crates.io dependencies and a handler that uses them."""
    add_json_dependencies(crate)
    (crate / "src" / "lib.rs").write_text(JSON_HANDLER.format(word=word))


def test_new_build_serve_and_rebuild_outside_the_repository(tmp_path: Path) -> None:
    assert not tmp_path.is_relative_to(REPO_ROOT)
    started = time.monotonic()
    edge_runner("new", "greeter", cwd=tmp_path)
    crate = tmp_path / "greeter"

    # The scaffold as written builds, and serves the greeting from manifests/.
    edge_runner("build", "greeter", cwd=tmp_path)
    assert (crate / "greeter.wasm").read_bytes().startswith(b"\0asm")
    with RunnerProcess(crate / "manifests") as runner:
        response = runner.client.get("/greeter", params={"name": "Ada"})
        assert (response.status_code, response.text) == (200, "Hello, Ada!")
        print(f"new -> served: {time.monotonic() - started:.1f}s")

        # A crates.io dependency: built, and the running server reloads the module.
        use_serde_json(crate, "Hi")
        rebuilt = time.monotonic()
        edge_runner("build", cwd=crate)

        def rebuilt_answer() -> bool:
            # The old module answers text until the reload: not JSON yet.
            response = runner.client.get("/greeter", params={"name": "Ada"})
            try:
                return bool(response.json() == {"greeting": "Hi, Ada!", "len": 3})
            except ValueError:
                return False

        wait_until(rebuilt_answer, timeout=15, what="rebuilt module")
        print(f"rebuild with serde_json -> served: {time.monotonic() - rebuilt:.1f}s")
        assert "error" not in runner.functions()["greeter"]
    assert (crate / "target" / "edge-vendor" / "serde_json-1.0.108").is_dir() or \
        (crate / "target" / "edge-vendor" / "serde_json").is_dir()


def test_build_failures_say_why(tmp_path: Path) -> None:
    edge_runner("new", "broken", cwd=tmp_path)
    (tmp_path / "broken" / "src" / "lib.rs").write_text("this is not rust\n")
    result = subprocess.run([str(EDGE_RUNNER), "build", str(tmp_path / "broken")],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode != 0
    assert "cargo could not build" in result.stderr
    assert not (tmp_path / "broken" / "broken.wasm").exists()


def test_the_samples_folder_serves_every_sample(hello_wasm: Path, wagi_wasm: Path) -> None:
    """``edge-runner serve --manifests functions`` (and ``make run FN=...``): the cluster
    form of hello-world lives in its kustomization, so nothing is defined twice."""
    with RunnerProcess(REPO_ROOT / "functions") as runner:
        assert runner.client.get("/hello", params={"name": "Ada"}).text == "Hello, Ada!"
        assert runner.client.get("/wagi").status_code == 200
        body = runner.admin.get("/v1/functions").json()
        assert [e for e in body["errors"] if "also defined" in e] == []
        assert {"hello-world", "wagi-hello"} <= {f["name"] for f in body["functions"]
                                                  if f["state"] == "ready"}
