"""Runner and operator settings (edge_runner.settings, edge_operator.config): one
declaration gives a flag, an environment variable, the --help text and a row of
docs/cli.md; bad input is a usage error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge_api.settings import ProcessSettings, flag, parse, unknown_variables
from edge_operator.config import OperatorConfig
from edge_runner import cli
from edge_runner.cli import main
from edge_runner.settings import RunnerSettings
from support.wasm import REPO_ROOT

CLI_TEXT = (REPO_ROOT / "docs" / "cli.md").read_text()


def section(heading: str) -> str:
    """One ``## heading`` section of docs/cli.md."""
    return CLI_TEXT.split(f"## {heading}")[1].split("\n## ")[0]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POD_NAMESPACE", "POD_NAME", *RunnerSettings.env_names(),
                 *OperatorConfig.env_names()):
        monkeypatch.delenv(name, raising=False)


def settings(argv: list[str]) -> RunnerSettings:
    parsed = cli.parse(argv)
    assert isinstance(parsed, RunnerSettings), parsed
    return parsed


@pytest.mark.parametrize(("model", "heading"), [
    (RunnerSettings, "`edge-runner serve`"), (OperatorConfig, "`edge-operator`")])
def test_every_setting_is_documented_with_its_flag_and_variable(
    model: type[ProcessSettings], heading: str
) -> None:
    rows = {line.split("|")[1].strip(): line for line in section(heading).splitlines()
            if line.startswith("| `--")}
    for variable, field in model.env_names().items():
        documented = [row for name, row in rows.items()
                      if re.fullmatch(f"`{flag(field)}( [A-Z]+)?`", name)]
        assert documented, f"{flag(field)} is missing from docs/cli.md"
        assert f"`{variable}`" in documented[0]
    assert len(rows) == len(model.model_fields)  # and nothing documented that does not exist


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
    error = cli.parse(argv)
    assert isinstance(error, str) and error.startswith(message)


def test_a_misspelt_variable_stops_the_runner(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EDGE_RUNNER_MAX_QUEUD", "5")
    assert unknown_variables(RunnerSettings) == ["EDGE_RUNNER_MAX_QUEUD"]
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


def test_operator_namespaces_from_flags_a_list_or_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    def namespaces(argv: list[str]) -> list[str]:
        parsed = parse(OperatorConfig, argv)
        assert isinstance(parsed, OperatorConfig), parsed
        return parsed.namespace

    assert namespaces([]) == []
    monkeypatch.setenv("POD_NAMESPACE", "edge")
    assert namespaces([]) == ["edge"]
    monkeypatch.setenv("EDGE_OPERATOR_NAMESPACE", "a, b")
    assert namespaces([]) == ["a", "b"]
    assert namespaces(["--namespace", "x", "--namespace", "y"]) == ["x", "y"]
    assert parse(OperatorConfig, ["--url-timeout", "0"]) == (
        "--url-timeout: Input should be greater than 0")
    monkeypatch.setenv("EDGE_OPERATOR_URL_TIMOUT", "5")
    assert parse(OperatorConfig, []) == (
        "unknown setting(s) in the environment: EDGE_OPERATOR_URL_TIMOUT")
