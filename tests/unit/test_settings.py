"""Runner settings (edge_runner.settings): one declaration gives a flag, an environment
variable, the --help text and a row of docs/cli.md; bad input is a usage error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge_runner.cli import main, parse
from edge_runner.settings import RunnerSettings, unknown_variables
from support.wasm import REPO_ROOT

#: The runner's section of docs/cli.md.
CLI_DOC = (REPO_ROOT / "docs" / "cli.md").read_text().split("## `edge-runner serve`")[1] \
    .split("\n## ")[0]


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POD_NAMESPACE", "POD_NAME", *(f"EDGE_RUNNER_{f.upper()}"
                                                for f in RunnerSettings.model_fields)):
        monkeypatch.delenv(name, raising=False)


def settings(argv: list[str]) -> RunnerSettings:
    parsed = parse(argv)
    assert isinstance(parsed, RunnerSettings), parsed
    return parsed


def test_every_setting_is_documented_with_its_flag_and_variable() -> None:
    rows = {line.split("|")[1].strip(): line for line in CLI_DOC.splitlines()
            if line.startswith("| `--")}
    for field in RunnerSettings.model_fields:
        documented = [row for name, row in rows.items()
                      if re.fullmatch(f"`{flag(field)}( [A-Z]+)?`", name)]
        assert documented, f"{flag(field)} is missing from docs/cli.md"
        assert f"`EDGE_RUNNER_{field.upper()}`" in documented[0]


def test_a_flag_beats_the_variable_which_beats_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert settings([]).max_wait == 1.0
    monkeypatch.setenv("EDGE_RUNNER_MAX_WAIT", "0.25")
    assert settings([]).max_wait == 0.25
    assert settings(["--max-wait", "2"]).max_wait == 2.0
    assert settings(["--max-wait=3"]).max_wait == 3.0


def test_quantities_kubernetes_variables_and_an_empty_cache_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EDGE_RUNNER_MEMORY_LIMIT", "536870912")  # the chart's downward API
    monkeypatch.setenv("POD_NAMESPACE", "edge")
    monkeypatch.setenv("POD_NAME", "runner-0")
    parsed = settings(["--memory-default", "1Gi", "--cache-dir", ""])
    assert (parsed.memory_limit, parsed.memory_default) == (512 * 2**20, 2**30)
    assert (parsed.namespace, parsed.pod_name, parsed.cache_dir) == ("edge", "runner-0", None)
    assert settings(["--namespace", "other"]).namespace == "other"
    assert settings(["--cache-dir", str(tmp_path)]).cache_dir == tmp_path
    assert settings(["--manifests", str(tmp_path)]).manifests == tmp_path


@pytest.mark.parametrize(("argv", "message"), [
    (["--port", "70000"], "--port: Input should be less than or equal to 65535"),
    (["--max-wait", "0"], "--max-wait: Input should be greater than 0"),
    (["--memory-limit", "lots"], "--memory-limit"),
    (["--log-level", "loud"], "--log-level"),
    (["--manifests", "/nonexistent"], "--manifests /nonexistent: not a directory"),
])
def test_bad_values_name_the_option(argv: list[str], message: str) -> None:
    error = parse(argv)
    assert isinstance(error, str) and error.startswith(message)


def test_a_misspelt_variable_stops_the_runner(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EDGE_RUNNER_MAX_QUEUD", "5")
    assert unknown_variables() == ["EDGE_RUNNER_MAX_QUEUD"]
    assert main(["serve"]) == 2
    assert "unknown setting(s) in the environment: EDGE_RUNNER_MAX_QUEUD" in capsys.readouterr().err


def test_help_shows_every_flag_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    assert done.value.code == 0
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    for field in RunnerSettings.model_fields:
        assert flag(field) in text
    assert "data plane port (default: 8080)" in text
    assert main(["bogus"]) == 2
