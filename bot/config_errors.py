"""What is wrong with the configuration, as the operator reads it: one line per setting (SPEC §3)."""

from __future__ import annotations

from pydantic import ValidationError

__all__ = ["ConfigError", "ConfigErrors", "malformed", "raise_all"]


class ConfigError(Exception):
    """A setting is missing or malformed. `str()` is the one line shown to the operator."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class ConfigErrors(ConfigError):
    """Several settings are wrong at once. `str()` is one line per setting, so one run names them all."""

    def __init__(self, errors: list[ConfigError]) -> None:
        Exception.__init__(self, "\n".join(str(e) for e in errors))
        self.variable = errors[0].variable
        self.errors = errors


def raise_all(errors: list[ConfigError]) -> None:
    """Raise nothing, the one error, or all of them together."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)


def malformed(exc: ValidationError) -> list[ConfigError]:
    """pydantic's report as one error per variable (the first problem of each)."""
    found: dict[str, ConfigError] = {}
    for error in exc.errors():
        variable = (str(error["loc"][0]) if error["loc"] else "configuration").upper()
        message = error["msg"].removeprefix("Value error, ")
        found.setdefault(variable, ConfigError(variable, message))
    return list(found.values())
