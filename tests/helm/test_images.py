"""images/*.Dockerfile: their install steps work, replayed without Docker.

No Docker engine runs here, so each Dockerfile is read and its builder stage
replayed on this machine: the COPY lines build a copy of the build context's
files in a temporary /src, `python -m venv /opt/venv` makes a fresh venv in a
temporary directory, and the RUN pip install lines run against it, with the
container paths mapped to the temporary ones. Then the image's entry points
must run (`--help`). Also checked: the final stage is non-root (65532) and
takes the venv from the builder, and the base image is pinned.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge_runner.buildinfo import COMPILED
from support.helm import REPO_DIR

IMAGES_DIR = REPO_DIR / "images"
DOCKERFILES = sorted(IMAGES_DIR.glob("*.Dockerfile"))
VENV = "/opt/venv"
ENTRY_POINTS = ("edge-runner", "edge-operator")
#: Packages a builder stage may apt-get (the replay checks the machine has them instead).
APT_TOOLS = re.compile(r"\b(gcc|libc6-dev)\b")
APT_TOOLS_COMMANDS = {"libc6-dev": "ldd"}
PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$")


@dataclass
class Stage:
    base: str
    name: str = ""
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [rest for name, rest in self.instructions if name == instruction]


def parse(dockerfile: Path) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile; continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        rest = rest.strip()
        if instruction == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(base=base, name=name))
        elif instruction == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            assert stages, f"{dockerfile.name}: {instruction} before FROM"
            stages[-1].instructions.append((instruction, rest))
    return args, stages


def exec_form(rest: str) -> list[str]:
    """The JSON (exec) form of ENTRYPOINT / CMD."""
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


def copy_context(stage: Stage, source_root: Path, workdir: Path) -> None:
    """Replay the stage's COPY lines (from the build context) into ``workdir``.

    Docker's rules: a directory's contents go to the destination; files go
    into the destination when it ends with "/"; a wildcard may match nothing
    as long as the line as a whole copies something.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for rest in stage.all("COPY"):
        words = shlex.split(rest)
        assert not any(w.startswith("--from") for w in words), "builder copies only the context"
        *sources, destination = words
        target = workdir / destination
        matches = [
            Path(found)
            for pattern in sources
            for found in sorted(glob.glob(str(source_root / pattern.rstrip("/"))))
        ]
        assert matches, f"COPY {rest}: nothing in the build context matches"
        for path in matches:
            if path.is_dir():
                shutil.copytree(path, target, dirs_exist_ok=True, ignore=ignore)
            else:
                into = target / path.name if destination.endswith("/") else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, into)


def replay_builder(dockerfile: Path, tmp_path: Path) -> Path:
    """Replay the builder stage; the venv it made."""
    _, stages = parse(dockerfile)
    builder = stages[0]
    venv = tmp_path / "venv"
    workdir = tmp_path / "src"
    (workdir_set,) = builder.all("WORKDIR")
    workdir.mkdir()
    copy_context(builder, REPO_DIR, workdir)
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    for rest in builder.all("RUN"):
        command = rest.replace(VENV, str(venv)).replace(workdir_set, str(workdir))
        if re.fullmatch(rf"python3? -m venv {re.escape(str(venv))}", command):
            # The same interpreter as the base image's (3.11), without its PATH.
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            continue
        if command.startswith("apt-get update && apt-get install"):
            # The base image's build tools: this machine has them (scripts/setup.sh).
            for package in APT_TOOLS.findall(command.split("install", 1)[1]):
                assert shutil.which(APT_TOOLS_COMMANDS.get(package, package)), package
            continue
        assert "pip " in command, f"{dockerfile.name}: teach this test to replay: {rest}"
        # The machine's pip cache may serve the downloads; the install is the same.
        command = command.replace("--no-cache-dir ", "")
        subprocess.run(command, shell=True, cwd=workdir, env=env, check=True, timeout=900)
    return venv


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_shape(dockerfile: Path) -> None:
    _, stages = parse(dockerfile)
    assert len(stages) == 2, "a builder stage and a final stage"
    builder, final = stages
    assert builder.name == "builder"
    assert builder.base == final.base, "the venv's interpreter path must exist in the final stage"
    assert PINNED_BASE.match(final.base), f"base image not pinned: {final.base}"
    assert final.all("USER") == ["65532:65532"]
    assert final.all("COPY") == [f"--from=builder {VENV} {VENV}"]
    assert not final.all("RUN"), "nothing runs in the final stage (no package manager use)"
    (entrypoint,) = final.all("ENTRYPOINT")
    assert exec_form(entrypoint)[0] in ENTRY_POINTS
    assert any(f"PATH={VENV}/bin:" in env for env in final.all("ENV"))
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    assert ignore.is_file(), f"{ignore.name} keeps .venv and build output out of the context"


def test_there_is_an_image_per_command() -> None:
    entry_points = set()
    for dockerfile in DOCKERFILES:
        _, stages = parse(dockerfile)
        (entrypoint,) = stages[-1].all("ENTRYPOINT")
        entry_points.add(exec_form(entrypoint)[0])
    assert entry_points == set(ENTRY_POINTS)


@pytest.mark.slow
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_install_steps_work_in_a_fresh_venv(dockerfile: Path, tmp_path: Path) -> None:
    venv = replay_builder(dockerfile, tmp_path)
    for command in ENTRY_POINTS:
        result = subprocess.run(
            [str(venv / "bin" / command), "--help"],
            capture_output=True, text=True, timeout=120, check=False,
            env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)},
        )  # fmt: skip
        assert result.returncode == 0, f"{command} --help:\n{result.stdout}{result.stderr}"
        assert "usage:" in result.stdout.lower()
    # The image's own command line (ENTRYPOINT + CMD) parses.
    _, stages = parse(dockerfile)
    (entrypoint,) = stages[-1].all("ENTRYPOINT")
    argv = exec_form(entrypoint) + [a for rest in stages[-1].all("CMD") for a in exec_form(rest)]
    result = subprocess.run(
        [str(venv / "bin" / argv[0]), *argv[1:], "--help"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{' '.join(argv)} --help:\n{result.stdout}{result.stderr}"
    # Only runtime dependencies: the dev extras stay out of the image.
    freeze = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "freeze"],
        capture_output=True, text=True, check=True,
    ).stdout.lower()  # fmt: skip
    installed = {re.split(r"==| @ ", line)[0] for line in freeze.splitlines()}
    assert {"edge-runner", "wasmtime", "kopf", "uvicorn"} <= installed
    assert not installed & {"pytest", "mypy", "ruff", "hypothesis"}
    # The runner image runs the request path compiled (setup.py), the operator's as Python.
    loaded = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import edge_runner.server, edge_runner.buildinfo"
         " as b; print(len(b.compiled_modules()))"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout  # fmt: skip
    expected = len(COMPILED) if "EDGE_RUNNER_COMPILE=1" in dockerfile.read_text() else 0
    assert int(loaded) == expected, f"{dockerfile.name}: {loaded} modules compiled"
    if "runner" in dockerfile.name:
        assert expected, "the runner image compiles the request path"
