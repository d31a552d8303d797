"""The configuration of a command: ``Settings`` from the environment and its flags, or a
one-line-per-problem message and exit code 2 (never the values given)."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from deliverytrack.models.settings import Settings


def settings_of(overrides: dict[str, Any]) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except (ValidationError, SettingsError) as exc:
        print(f"deliverytrack: invalid configuration:\n{describe_settings_error(exc)}",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(2) from None


def describe_settings_error(exc: ValidationError | SettingsError) -> str:
    """What is wrong with the configuration, one line per problem, without the values given:
    pydantic's own text shows them (``input_value=...``), and they may be keys or secrets."""
    if isinstance(exc, SettingsError):
        # "error parsing value for field "x" from source "EnvSettingsSource"" (never the value)
        return f"  {exc}"
    lines = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(part) for part in error["loc"]) or "<settings>"
        env = "DELIVERYTRACK_" + str(error["loc"][0]).upper() if error["loc"] else ""
        lines.append(f"  {where}{f' ({env})' if env else ''}: {error['msg']}")
    return "\n".join(lines)


def whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` (to ``high``), else a usage error (exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above 0, else a usage error (exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a finite number of seconds above 0, got {text!r}"
        )
    return value
