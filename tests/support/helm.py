"""The ``helm`` binary and the chart, for the chart tests (tests/helm/).

Sits in tests/support/ and is imported as ``support.helm``. :func:`find_helm`
returns the binary: ``EDGE_HELM_BIN`` if set, else whatever
``tests/helm-bin/build.sh`` prints (it builds helm from the Go module pinned
in tests/helm-bin/go.mod once, into a cache outside the repo, and returns at
once when it is cached). :class:`Helm` runs it with its own config, cache and
data directories (never the user's ~/.config/helm) and parses what
``helm template`` renders, helm-unittest style: tests assert on paths of the
rendered objects.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = TESTS_DIR.parent
CHART_DIR = REPO_DIR / "charts" / "edge-runner"
HELM_BIN_MODULE_DIR = TESTS_DIR / "helm-bin"
BUILD_SCRIPT = HELM_BIN_MODULE_DIR / "build.sh"

Manifest = dict[str, Any]


class HelmError(RuntimeError):
    """helm could not be found or built."""


class HelmCommandError(subprocess.CalledProcessError):
    """A helm call failed; unlike its base class, str() includes stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr:\n{self.stderr}\nstdout:\n{self.output}"


def pinned_version() -> str:
    """The helm version required by tests/helm-bin/go.mod, e.g. ``v3.22.0``."""
    for line in (HELM_BIN_MODULE_DIR / "go.mod").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "helm.sh/helm/v3" and fields[1].startswith("v"):
            return fields[1]
    raise HelmError(f"no helm.sh/helm/v3 requirement in {HELM_BIN_MODULE_DIR / 'go.mod'}")


def find_helm() -> Path:
    """The helm binary: ``EDGE_HELM_BIN``, else built (once) by build.sh."""
    configured = os.environ.get("EDGE_HELM_BIN")
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise HelmError(f"EDGE_HELM_BIN={configured} is not an executable file")
        return path
    # stderr (progress lines of a first build) goes to ours.
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise HelmError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
    path = Path(lines[-1])
    if not os.access(path, os.X_OK):
        raise HelmError(f"{BUILD_SCRIPT} printed {path}, which is not executable")
    return path


class Helm:
    """Runs one helm binary with private HELM_* directories under ``home``."""

    def __init__(self, binary: Path, *, home: Path, chart: Path = CHART_DIR) -> None:
        self.binary = binary
        self.home = home
        self.chart = chart
        self._values_files = 0

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("CONFIG", "CACHE", "DATA"):
            directory = self.home / name.lower()
            directory.mkdir(parents=True, exist_ok=True)
            env[f"HELM_{name}_HOME"] = str(directory)
        env.pop("HELM_NAMESPACE", None)
        env.pop("HELM_KUBECONTEXT", None)
        if extra:
            env.update(extra)
        return env

    def run(
        self,
        *args: str,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run helm; raise HelmCommandError (with stderr) if ``check`` and it fails."""
        argv = [str(self.binary), *args]
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=self.env(env),
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise HelmCommandError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def values_args(
        self, values: Mapping[str, Any] | None = None, sets: Sequence[str] = ()
    ) -> list[str]:
        """``-f <file>`` for ``values`` (written as YAML under home) and ``--set`` each."""
        args: list[str] = []
        if values:
            self._values_files += 1
            path = self.home / f"values-{self._values_files}.yaml"
            path.write_text(yaml.safe_dump(dict(values), sort_keys=False))
            args += ["-f", str(path)]
        for assignment in sets:
            args += ["--set", assignment]
        return args

    def lint(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        sets: Sequence[str] = (),
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "lint", "--strict", str(self.chart), *self.values_args(values, sets), check=check
        )

    def template(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        sets: Sequence[str] = (),
        release: str = "edge",
        namespace: str = "edge-system",
        extra: Sequence[str] = (),
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """``helm template`` of the chart; stdout is the rendered YAML stream."""
        return self.run(
            "template",
            release,
            str(self.chart),
            "--namespace",
            namespace,
            *self.values_args(values, sets),
            *extra,
            check=check,
        )

    def render(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        sets: Sequence[str] = (),
        release: str = "edge",
        namespace: str = "edge-system",
        extra: Sequence[str] = (),
    ) -> Rendered:
        """The objects ``helm template`` renders (without the CRDs of crds/)."""
        result = self.template(
            values, sets=sets, release=release, namespace=namespace, extra=extra
        )
        return Rendered(parse_manifests(result.stdout))


def parse_manifests(text: str) -> list[Manifest]:
    """The objects of a YAML stream, leaving out empty documents."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


class Rendered:
    """Rendered objects with look-ups by kind and name (helm-unittest style)."""

    def __init__(self, objects: Iterable[Manifest]) -> None:
        self.objects = list(objects)

    def __iter__(self) -> Any:
        return iter(self.objects)

    def __len__(self) -> int:
        return len(self.objects)

    def kinds(self) -> list[str]:
        return sorted(obj["kind"] for obj in self.objects)

    def all(self, kind: str) -> list[Manifest]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Manifest:
        """The only object of ``kind`` (named ``name``, if given); AssertionError otherwise."""
        found = [
            obj for obj in self.all(kind) if name is None or obj["metadata"]["name"] == name
        ]
        assert len(found) == 1, (
            f"expected one {kind}{' ' + name if name else ''}, found {len(found)}: "
            f"{[o['metadata']['name'] for o in found]}"
        )
        return found[0]

    def has(self, kind: str) -> bool:
        return any(obj["kind"] == kind for obj in self.objects)


def path(obj: Any, dotted: str) -> Any:
    """The value at a dotted path; list items by index (``spec.ports.0.port``).

    Raises KeyError naming the path when a step is missing.
    """
    current = obj
    for step in dotted.split("."):
        try:
            current = current[int(step)] if isinstance(current, list) else current[step]
        except (KeyError, IndexError, ValueError, TypeError):
            raise KeyError(f"{dotted}: no {step!r}") from None
    return current


def container(deployment: Manifest, name: str) -> Manifest:
    """The container named ``name`` of a Deployment's pod template."""
    for item in path(deployment, "spec.template.spec.containers"):
        if item["name"] == name:
            return dict(item)
    raise KeyError(f"no container {name} in {deployment['metadata']['name']}")


__all__ = [
    "CHART_DIR",
    "REPO_DIR",
    "Helm",
    "HelmCommandError",
    "HelmError",
    "Manifest",
    "Rendered",
    "container",
    "find_helm",
    "parse_manifests",
    "path",
    "pinned_version",
]
