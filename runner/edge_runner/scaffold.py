"""``edge-runner new`` and ``edge-runner build``: a function crate anywhere, built in one command.

Sits beside the server under :mod:`edge_runner.cli`, which parses the options
declared here (:class:`NewOptions`, :class:`BuildOptions`, pydantic-settings
like ``serve``'s) and calls :func:`create` or :func:`build`.  Imports nothing
else of the runner.

``new`` writes a crate that builds and deploys on its own, outside this
repository (docs/functions.md):

* ``Cargo.toml``: a ``cdylib`` package in its own workspace, depending on the
  guest SDK ``edge-sdk`` by path (the ``functions/edge-sdk`` of the checkout
  this edge-runner runs from) or by git, with the release profile of the
  samples; crates from crates.io may be added (built for wasm32-wasi with
  Debian's rustc 1.63: docs/sdk.md says which versions);
* ``src/lib.rs``: a handler using the SDK;
* ``manifests/``: the one spec of the function (EdgeFunction + EdgeRoute),
  which a standalone runner serves as is (``source.path``);
* ``kustomization.yaml``: the cluster form of the same spec: the module goes
  into a ConfigMap and a patch swaps ``source.path`` for ``configMapRef``, so
  the two forms cannot drift (``kubectl apply --server-side -k DIR``).

``build`` runs ``functions/build.sh --crate DIR`` of the same checkout (the one
build script: Debian's rustc, ``wasm32-wasi``, crates vendored, the artifact
copied next to ``Cargo.toml``).  The sample ``functions/hello-world`` has
exactly the layout ``new`` writes (a unit test compares them).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Final

from pydantic import Field, field_validator
from pydantic_settings import CliPositionalArg, SettingsConfigDict

from edge_api.settings import BASE_CONFIG, ProcessSettings

#: The checkout this package runs from (an editable install: ``pip install -e .``).
CHECKOUT: Final = Path(__file__).resolve().parents[2]
FUNCTIONS_DIR: Final = CHECKOUT / "functions"
SDK_DIR: Final = FUNCTIONS_DIR / "edge-sdk"
BUILD_SCRIPT: Final = FUNCTIONS_DIR / "build.sh"
NAME_PATTERN: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


class ScaffoldError(Exception):
    """A crate cannot be created or built; the message says why and what to do."""


class NewOptions(ProcessSettings):
    """Create a function crate: edge-runner new NAME [--dir DIR].

    Writes DIR/NAME with Cargo.toml, src/lib.rs, manifests/ (standalone) and
    kustomization.yaml (cluster); build it with `edge-runner build DIR/NAME`.
    """

    model_config = SettingsConfigDict(
        **BASE_CONFIG, env_prefix="EDGE_RUNNER_NEW_", cli_prog_name="edge-runner new")

    name: CliPositionalArg[str] = Field(
        pattern=NAME_PATTERN, max_length=63, description="function name: lower-case letters,"
        " digits and '-', starting with a letter (the crate, EdgeFunction and EdgeRoute name)")
    dir: Path = Field(Path("."), description="folder in which to create the crate folder NAME")
    path: str | None = Field(None, pattern=r"^/", description="path of its route (default:"
                             " /NAME)")
    sdk: str | None = Field(
        None, description="the edge-sdk dependency: a folder, or git+URL[#REV] for a git"
        " repository holding it (default: functions/edge-sdk of this edge-runner's checkout)")


class BuildOptions(ProcessSettings):
    """Build a function crate to its .wasm: edge-runner build [DIR].

    Runs functions/build.sh --crate DIR of this edge-runner's checkout: Debian's
    rustc for wasm32-wasi, crates.io dependencies vendored, the module written
    next to Cargo.toml.
    """

    model_config = SettingsConfigDict(
        **BASE_CONFIG, env_prefix="EDGE_RUNNER_BUILD_", cli_prog_name="edge-runner build")

    crate: CliPositionalArg[Path] = Field(Path("."), description="the crate folder (default: the"
                                          " current folder)")

    @field_validator("crate")
    @classmethod
    def _has_manifest(cls, value: Path) -> Path:
        if not (value / "Cargo.toml").is_file():
            raise ValueError(f"{value} has no Cargo.toml")
        return value


# -- templates ------------------------------------------------------------------------------

CARGO_TOML: Final = """\
# {name}: an edge-runner function (edge ABI). Build: edge-runner build
# SDK reference: docs/sdk.md of edge-runner.
[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
name = "{lib}"
path = "src/lib.rs"
crate-type = ["cdylib"]

[dependencies]
{sdk}
# Crates from crates.io work when they build with Debian's rustc 1.63 for
# wasm32-wasi. Cargo 1.65 picks the newest versions, so pin ones old enough
# (docs/sdk.md lists tested sets), e.g. JSON:
# serde_json = "=1.0.108"
# serde = "=1.0.193"
# itoa = "=1.0.9"
# ryu = "=1.0.15"

# A workspace of its own, wherever the folder is.
[workspace]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = true
"""

LIB_RS: Final = """\
//! {name}: an edge-runner function. The SDK: docs/sdk.md of edge-runner.

use edge_sdk::{{Request, Response}};

fn handle(req: &Request) -> Response {{
    let name = req.query_param("name").unwrap_or_else(|| "world".into());
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".into());
    Response::text(200, format!("{{}}, {{}}!", greeting, name))
}}

edge_sdk::edge_main!(handle);
"""

FUNCTION_YAML: Final = """\
# The one spec of {name}. A standalone runner serves this folder as is
# (edge-runner serve --manifests manifests); in a cluster, kustomization.yaml
# takes this file and only swaps source.path for the module's ConfigMap.
apiVersion: edgerunner.dev/v1alpha1
kind: EdgeFunction
metadata:
  name: {name}
spec:
  source:
    path: ../{lib}.wasm   # standalone; relative to this file (edge-runner build writes it)
  abi: edge
  limits:
    memory: 64Mi
    timeout: 1s
  env:
    - name: GREETING
      value: Hello
"""

ROUTE_YAML: Final = """\
apiVersion: edgerunner.dev/v1alpha1
kind: EdgeRoute
metadata:
  name: {name}
spec:
  rules:
    - match:
        path: {path}
        pathType: Prefix
      function: {name}
"""

KUSTOMIZATION_YAML: Final = """\
# Cluster install of {name}, from the same spec standalone mode serves:
#   kubectl apply --server-side -n NAMESPACE -k .
# The module goes into the ConfigMap {name}-module (rebuilt module, same command:
# the operator watches the ConfigMap), and the patch below points the
# EdgeFunction at it instead of the file. Limits, env and routes stay in manifests/.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - manifests/function.yaml
  - manifests/route.yaml
configMapGenerator:
  - name: {name}-module
    files:
      - module.wasm={lib}.wasm
generatorOptions:
  disableNameSuffixHash: true
patches:
  - target:
      group: edgerunner.dev
      kind: EdgeFunction
      name: {name}
    patch: |-
      - op: replace
        path: /spec/source
        value:
          configMapRef:
            name: {name}-module
            key: module.wasm
"""

GITIGNORE: Final = """\
/target/
*.wasm
"""

README_MD: Final = """\
# {name}

An edge-runner function (edge ABI); docs/functions.md of edge-runner explains this layout.

```sh
edge-runner build                                  # -> {lib}.wasm
edge-runner serve --manifests manifests            # standalone on :8080
curl localhost:8080{path}?name=Ada
kubectl apply --server-side -n NAMESPACE -k .      # the same spec, in a cluster
```
"""


def files(name: str, *, sdk_dependency: str, path: str | None = None) -> dict[str, str]:
    """The crate's files (relative path -> content)."""
    values = {"name": name, "lib": name.replace("-", "_"), "path": path or f"/{name}",
              "sdk": sdk_dependency}
    return {
        "Cargo.toml": CARGO_TOML.format(**values),
        "src/lib.rs": LIB_RS.format(**values),
        "manifests/function.yaml": FUNCTION_YAML.format(**values),
        "manifests/route.yaml": ROUTE_YAML.format(**values),
        "kustomization.yaml": KUSTOMIZATION_YAML.format(**values),
        ".gitignore": GITIGNORE,
        "README.md": README_MD.format(**values),
    }


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sdk_dependency(sdk: str | None) -> str:
    """The ``edge-sdk = ...`` line of Cargo.toml for ``--sdk`` (see :class:`NewOptions`)."""
    if sdk is not None and sdk.startswith("git+"):
        url, _hash, rev = sdk[4:].partition("#")
        if not re.match(r"^[a-z][a-z0-9+.-]*://", url):
            raise ScaffoldError(f"--sdk {sdk}: expected git+URL[#REV]")
        extra = f", rev = {_toml_string(rev)}" if rev else ""
        return f"edge-sdk = {{ git = {_toml_string(url)}{extra} }}"
    folder = Path(sdk).expanduser().resolve() if sdk is not None else SDK_DIR
    if not (folder / "Cargo.toml").is_file():
        raise ScaffoldError(
            f"no edge-sdk at {folder}: give --sdk with the folder functions/edge-sdk of an"
            " edge-runner checkout, or git+URL of its repository")
    return f"edge-sdk = {{ path = {_toml_string(str(folder))} }}"


def create(options: NewOptions) -> Path:
    """Write the crate; returns its folder.  Refuses to write into an existing folder."""
    crate = options.dir / options.name
    if crate.exists():
        raise ScaffoldError(f"{crate} already exists")
    content = files(options.name, sdk_dependency=sdk_dependency(options.sdk),
                    path=options.path)
    for relative, text in content.items():
        target = crate / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return crate


def build(options: BuildOptions) -> int:
    """Run the build script for the crate; its exit code."""
    if not BUILD_SCRIPT.is_file():
        raise ScaffoldError(
            f"{BUILD_SCRIPT} is missing: edge-runner build needs the checkout edge-runner was"
            " installed from (pip install -e), whose functions/build.sh it runs")
    command = ["bash", str(BUILD_SCRIPT), "--crate", str(options.crate)]
    return subprocess.run(command, check=False, env=dict(os.environ)).returncode


NEXT_STEPS: Final = """\
created {crate}
next:
  edge-runner build {crate}
  edge-runner serve --manifests {crate}/manifests
  curl localhost:8080{path}
"""
