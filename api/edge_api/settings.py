"""What the runner's and the operator's settings models share (pydantic-settings).

Each process declares its settings once, as a subclass of :class:`ProcessSettings`
(``edge_runner.settings.RunnerSettings``, ``edge_operator.config.OperatorConfig``):
every field is a flag (``max_wait`` -> ``--max-wait``) and an environment variable
(``<prefix>MAX_WAIT``).  Precedence: flag, then the prefixed variable, then the
variables the Kubernetes downward API sets in the chart (``POD_NAMESPACE``,
``POD_NAME``, mapped by :attr:`ProcessSettings.downward`), then the default.

:func:`parse` turns arguments plus the environment into settings or one error
message naming the option; a variable with the process's prefix that names no
setting is such an error, so a typo fails at start instead of being ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    CliApp,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

S = TypeVar("S", bound="ProcessSettings")

#: Configuration every process's settings model starts from.
BASE_CONFIG = SettingsConfigDict(
    cli_kebab_case=True, cli_hide_none_type=True, frozen=True, extra="forbid",
)


class _DownwardAPI(PydanticBaseSettingsSource):
    """Fields from plain variables such as ``POD_NAMESPACE`` (see ProcessSettings.downward)."""

    def __init__(self, settings_cls: type[BaseSettings], names: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.names = names

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ does the work

    def __call__(self) -> dict[str, Any]:
        return {field: os.environ[name] for name, field in self.names.items()
                if os.environ.get(name)}


class ProcessSettings(BaseSettings):
    """Base of a process's settings model; subclasses set ``env_prefix`` and fields."""

    #: Variable name -> field, read after the prefixed variables.
    downward: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _DownwardAPI(settings_cls, cls.downward))

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Variable -> field, for every field."""
        prefix = str(cls.model_config.get("env_prefix", ""))
        return {f"{prefix}{name.upper()}": name for name in cls.model_fields}


def unknown_variables(model: type[ProcessSettings], environ: Mapping[str, str] | None = None
                      ) -> list[str]:
    """Variables with ``model``'s prefix that name no setting (typos), sorted."""
    prefix = str(model.model_config.get("env_prefix", ""))
    known = model.env_names()
    env = os.environ if environ is None else environ
    return sorted(name for name in env if name.startswith(prefix) and name not in known)


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def parse(model: type[S], argv: Sequence[str]) -> S | str:
    """Settings from ``argv`` and the environment, or an error message naming the option.

    ``--help`` prints the help and exits (SystemExit 0); an unknown flag exits 2.
    """
    unknown = unknown_variables(model)
    if unknown:
        return f"unknown setting(s) in the environment: {', '.join(unknown)}"
    try:
        return CliApp.run(model, cli_args=list(argv))
    except ValidationError as exc:
        return "; ".join(
            f"{flag('_'.join(str(part) for part in error['loc']))}: {error['msg']}"
            for error in exc.errors()
        )
    except SettingsError as exc:
        return str(exc)
