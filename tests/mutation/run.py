"""Mutation testing of the pure modules with mutmut (``make mutation``; not part of ``make test``).

mutmut (https://mutmut.readthedocs.io) makes small changes to the code (a ``<`` for a
``<=``, a constant off by one, a dropped argument, ...) one at a time and runs the
unit tests that reach the changed function; a mutant no test notices "survives".

It runs in a scratch copy, never in the work tree: the three packages are copied
flat (``edge_api/``, ``edge_runner/``, ``edge_operator/``, so mutmut's ``mutants/``
copy is what the tests import), with ``tests/`` and ``pyproject.toml``, and a
``setup.cfg`` holding the ``[mutmut]`` settings below.  Only :data:`PURE` is mutated,
against the unit tests of :data:`TESTS`.  Afterwards the score is printed (killed,
including timeouts, over all mutants that ran), per module and in total, with every
survivor that tests/mutation/survivors.md does not explain (its mutated line under its
``module.function``), and the exit code is 1 if the score is under :data:`GOAL` or a
survivor is unexplained.

    .venv/bin/python tests/mutation/run.py [--dir DIR] [--jobs N] [--keep | --report]

``--dir``: the scratch directory (default ``$XDG_CACHE_HOME/edge-runner/mutation``,
emptied first unless ``--keep``, which lets mutmut re-run only what changed);
``--report`` only reports the last run found there.
``mutmut browse`` / ``mutmut show NAME`` in ``DIR`` show the survivors' diffs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"edge_api": REPO / "api", "edge_runner": REPO / "runner",
            "edge_operator": REPO / "operator"}
#: The pure modules: no I/O, no server, no engine.
PURE = [
    "edge_api/routing.py", "edge_api/units.py", "edge_api/models.py", "edge_api/wire.py",
    "edge_api/abi.py", "edge_runner/abi/envelope.py", "edge_runner/http/content_type.py",
    "edge_operator/conditions.py", "edge_operator/status.py",
]
#: Their unit tests (those that exist); none starts a process or a server.
TESTS = [
    "test_routing.py", "test_models.py", "test_units.py",
    "test_envelope.py", "test_content_type.py", "test_abi_checks.py",
    "test_operator_status.py", "test_operator_routes.py", "test_operator_publish.py",
    "test_operator_functions.py", "test_wire.py",
]
GOAL = 0.85
SURVIVORS_DOC = Path(__file__).with_name("survivors.md")
KILLED = {"killed", "timeout", "segfault", "suspicious"}
#: A mutant no test reached survives as surely as one the tests ran against.
NOT_KILLED = {"survived", "no tests"}


def prepare(work: Path, keep: bool) -> list[str]:
    if work.exists() and not keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for name, parent in PACKAGES.items():
        target = work / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(parent / name, target,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    if (work / "tests").exists():
        shutil.rmtree(work / "tests")
    shutil.copytree(REPO / "tests", work / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", "k8s-bins", "helm-bin"))
    shutil.copy(REPO / "pyproject.toml", work / "pyproject.toml")
    tests = [f"tests/unit/{name}" for name in TESTS if (REPO / "tests" / "unit" / name).exists()]
    (work / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths =\n" + "".join(f"    {name}\n" for name in PACKAGES)
        + "only_mutate =\n" + "".join(f"    {path}\n" for path in PURE)
        + "pytest_add_cli_args_test_selection =\n" + "".join(f"    {t}\n" for t in tests)
        # The suite's own settings: -p no:cacheprovider keeps the copy clean.
        + "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    -q\n"
        + "use_git_change_detection = false\n"
        # Fork each mutant's run from a server that has only imported the tests: some
        # tests compile wasm, and a process forked after wasmtime made its threads hangs.
        + "process_isolation = forkserver\n"
    )
    return tests


def explained() -> dict[str, set[str]]:
    """The mutated lines survivors.md explains, by ``module.function``: each ``### `name` ``
    section lists them as ``+`` lines of a fenced block, as ``mutmut show`` prints them
    (``+ *``: every mutant of the function)."""
    text = SURVIVORS_DOC.read_text() if SURVIVORS_DOC.exists() else ""
    found: dict[str, set[str]] = {}
    for section in re.split(r"^(?=### `)", text, flags=re.MULTILINE):
        heading = re.match(r"### `([\w.]+)`", section)
        if heading:
            lines = found.setdefault(heading.group(1), set())
            for block in re.findall(r"^```[a-z]*\n(.*?)^```", section, re.DOTALL | re.MULTILINE):
                lines.update(line[1:].strip() for line in block.splitlines()
                             if line.startswith("+"))
    return found


def mutated_lines(work: Path, env: dict[str, str], mutant: str) -> set[str]:
    """The ``+`` lines of ``mutmut show mutant``, stripped."""
    shown = subprocess.run([sys.executable, "-m", "mutmut", "show", mutant], cwd=work, env=env,
                           check=False, capture_output=True, text=True).stdout
    return {line[1:].strip() for line in shown.splitlines()
            if line.startswith("+") and not line.startswith("+++")}


def function_of(mutant: str) -> str:
    """``edge_api.routing.x_compile__mutmut_3`` -> ``edge_api.routing.compile``;
    ``...xǁRouteTableǁlookup__mutmut_1`` -> ``...RouteTable.lookup``."""
    module, _, mangled = mutant.rpartition(".")
    name = re.sub(r"__mutmut_\d+$", "", mangled)
    name = name.removeprefix("x_").removeprefix("xǁ").replace("ǁ", ".")
    name = name.removeprefix(".")
    return f"{module}.{name}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    parser.add_argument("--dir", type=Path, default=cache / "edge-runner" / "mutation")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--report", action="store_true",
                        help="only report the results of the last run in --dir")
    options = parser.parse_args()
    work: Path = options.dir.resolve()
    mutmut = [sys.executable, "-m", "mutmut"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if not options.report:
        tests = prepare(work, options.keep)
        print(f"mutation testing {len(PURE)} modules with {len(tests)} test files in {work}",
              flush=True)
        run = subprocess.run([*mutmut, "run", "--max-children", str(options.jobs)], cwd=work,
                             env=env, check=False)
        if run.returncode != 0:
            print(f"mutmut run failed with exit code {run.returncode}", file=sys.stderr)
            return 2
    subprocess.run([*mutmut, "export-cicd-stats"], cwd=work, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    listing = subprocess.run([*mutmut, "results", "--all", "true"], cwd=work, env=env,
                             check=True, capture_output=True, text=True).stdout
    statuses: dict[str, str] = {}
    for line in listing.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            statuses[name] = status.strip()
    per_module: dict[str, Counter[str]] = {}
    for name, status in statuses.items():
        module = name.rsplit(".", 1)[0]
        per_module.setdefault(module, Counter())[status] += 1
    total: Counter[str] = Counter()
    print(f"\n{'module':40} {'killed':>7} {'survived':>9} {'no tests':>8} {'other':>6}"
          f" {'score':>7}")
    for module, counts in sorted(per_module.items()):
        total.update(counts)
        print(_row(module, counts))
    print(_row("total", total))
    stats = json.loads((work / "mutants" / "mutmut-cicd-stats.json").read_text())
    print(f"mutmut-cicd-stats.json: {stats}")
    survivors = sorted(name for name, status in statuses.items() if status in NOT_KILLED)
    known = explained()
    unexplained = [name for name in survivors if not _explains(
        known.get(function_of(name), set()), partial(mutated_lines, work, env, name))]
    if survivors:
        print(f"\n{len(survivors)} survivors ({len(survivors) - len(unexplained)} explained in"
              f" {SURVIVORS_DOC.relative_to(REPO)}; ! = not explained):")
        for name in survivors:
            print(f"  {'  ' if name not in unexplained else '! '}{name}")
    score = _score(total)
    print(f"\nscore {score:.1%} (goal {GOAL:.0%}); `mutmut show NAME` in {work} shows a diff")
    return 0 if score >= GOAL and not unexplained else 1


def _explains(lines: set[str], mutated: Callable[[], set[str]]) -> bool:
    """A section explains a mutant if it lists its mutated lines, or ``+ *`` (all)."""
    return bool(lines) and ("*" in lines or mutated() <= lines)


def _score(counts: Counter[str]) -> float:
    """Killed over killed + survived + not reached by any test."""
    killed = sum(counts[s] for s in KILLED)
    ran = killed + sum(counts[s] for s in NOT_KILLED)
    return killed / ran if ran else 1.0


def _row(name: str, counts: Counter[str]) -> str:
    killed = sum(counts[s] for s in KILLED)
    other = sum(counts.values()) - killed - sum(counts[s] for s in NOT_KILLED)
    return (f"{name:40} {killed:7} {counts['survived']:9} {counts['no tests']:8}"
            f" {other:6} {_score(counts):7.1%}")


if __name__ == "__main__":
    sys.exit(main())
