"""Validation of topic values against the checked-in contract (docs/schemas/), shared by the
unit and integration tests: JSON Schema 2020-12 with the ``date-time`` format checked."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator

CONTRACT_DIR = Path(__file__).parents[1] / "docs" / "schemas"
FORMATS = Draft202012Validator.FORMAT_CHECKER
# jsonschema checks date-time only with rfc3339-validator installed (the dev extra has it):
# without it every timestamp would pass unchecked.
assert "date-time" in FORMATS.checkers, "pip install -e '.[dev]' (rfc3339-validator)"


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((CONTRACT_DIR / name).read_text(encoding="utf-8"))
    return document


@cache
def topic_validator(suffix: str) -> Draft202012Validator:
    """The validator of one public topic's value (``send-results``, ``status-changes``, ...)."""
    return schema_validator(load(f"{suffix}.json"))


def schema_validator(schema: dict[str, Any]) -> Draft202012Validator:
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FORMATS)


def problems(suffix: str, value: bytes | dict[str, Any]) -> list[str]:
    """Why ``value`` does not fit the topic's schema (empty: it fits)."""
    instance = orjson.loads(value) if isinstance(value, bytes) else value
    return [
        f"{'/'.join(str(part) for part in error.absolute_path) or '<root>'}: {error.message}"
        for error in topic_validator(suffix).iter_errors(instance)
    ]
