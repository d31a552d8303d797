"""Base model configuration and shared field types."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from math import isfinite
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
"""Timestamps must be before this: the fold adds durations (backoff, retention days, hold and
lease times) to them, and a date near year 9999 would overflow there."""

MAX_JSON_DEPTH = 32
"""How deep a free-form JSON object (metadata, details, raw) may nest. A record embeds such
objects a few levels down and pydantic reads JSON back only up to ~250 levels: this bound keeps
everything the engine accepts readable again (and is far more than any provider nests)."""


def _to_utc(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError as exc:  # e.g. 9999-12-31T23:59:59-01:00 is past datetime.max in UTC
        raise ValueError("is out of range once converted to UTC") from exc
    if utc < _EPOCH:
        # Index keys are unsigned epoch milliseconds; no message was sent before 1970.
        raise ValueError("must not be before 1970-01-01T00:00:00Z")
    if utc >= LATEST:
        raise ValueError("must be before 9000-01-01T00:00:00Z")
    return utc


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""An ISO-8601 timestamp with a timezone, normalised to UTC (serialised with ``Z``)."""


def _bound_to_utc(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        if value.year < 9999:
            raise ValueError("must not be before 1970-01-01T00:00:00Z") from None
        utc = datetime.max.replace(tzinfo=UTC)  # past the end of time: matches what is before
    if utc < _EPOCH:
        raise ValueError("must not be before 1970-01-01T00:00:00Z")
    return utc


UtcBound = Annotated[AwareDatetime, AfterValidator(_bound_to_utc)]
"""A query bound: like ``UtcDatetime`` but any time after 9000 is allowed (and matches
nothing later), so "up to 9999-12-31" keeps meaning "everything"."""


def utc_text(moment: datetime) -> str:
    """A time as every output writes it: ISO-8601 in UTC with ``Z``, exactly as the models
    serialise their times (``2026-11-23T09:00:00Z``, ``2026-11-23T09:00:00.123000Z``)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


NonEmptyStr = Annotated[str, Field(min_length=1, max_length=512)]
DerivedId = Annotated[str, Field(min_length=1, max_length=2048)]
"""An id the worker derives from up to three producer ids (each at most 512 characters) and a
label, e.g. ``<messageId>:deleted:<eventId>``: longer than any producer id may be."""


def checked_json(max_depth: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A validator of JSON objects: finite numbers only, nested at most ``max_depth`` levels.

    JSON has no NaN or Infinity. pydantic's one-pass JSON parser accepts ``NaN``, ``Infinity``
    and out-of-range numbers such as ``1e400`` inside a ``JsonValue`` (and model config does not
    reach it); such a value would be stored as ``null`` but kept as ``nan`` in memory. Refused
    here, so both decode paths and Python callers agree. Nesting is bounded so that what is
    accepted can be read back (see ``MAX_JSON_DEPTH``)."""

    def check(value: dict[str, Any]) -> dict[str, Any]:
        pending: list[tuple[Any, int]] = [(value, 1)]
        while pending:
            item, depth = pending.pop()
            if depth > max_depth:
                raise ValueError(f"JSON nests deeper than {max_depth} levels")
            for element in item.values() if isinstance(item, dict) else item:
                if type(element) is float:
                    if not isfinite(element):
                        raise ValueError("numbers must be finite (JSON has no NaN or Infinity)")
                elif isinstance(element, dict | list):
                    pending.append((element, depth + 1))
        return value

    return check


_finite_numbers = checked_json(MAX_JSON_DEPTH)


JsonObject = Annotated[dict[str, JsonValue], AfterValidator(_finite_numbers)]
"""A JSON object (details, metadata, raw provider payloads) whose numbers are all finite."""


class Frozen(BaseModel):
    """Frozen, strict-shaped model with camelCase JSON aliases (k-msg's field names)."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        alias_generator=to_camel,
        use_enum_values=False,
        ser_json_timedelta="float",
    )


class Tolerant(Frozen):
    """A model read from an input topic: unknown fields are ignored (a tolerant reader), so a
    producer can add a field before every worker is upgraded. Our own state (records,
    correlation states, markers) stays strict: what the engine writes, it reads back exactly."""

    model_config = ConfigDict(extra="ignore")


class ErrorInfo(Tolerant):
    """A tracking problem, k-msg's ``lastError``."""

    code: NonEmptyStr
    message: str = ""


_UNSET: Any = object()
_TEMPLATES: dict[type[BaseModel], tuple[dict[str, Any], frozenset[str], frozenset[str]]] = {}
M = TypeVar("M", bound=BaseModel)


def _template(cls: type[BaseModel]) -> tuple[dict[str, Any], frozenset[str], frozenset[str]]:
    fields = cls.model_fields
    for name, info in fields.items():
        if info.default_factory is not None:
            raise TypeError(f"trusted() does not support default factories ({cls.__name__}.{name})")
    template = {
        name: _UNSET if info.is_required() else info.default for name, info in fields.items()
    }
    required = frozenset(name for name, info in fields.items() if info.is_required())
    return template, required, frozenset(fields)


def trusted(cls: type[M], /, **values: Any) -> M:
    """An instance built from values that are already valid (taken from validated models, or
    derived from them by the fold): what ``model_construct`` does, without its per-field
    Python loop (~20 µs there, ~2 µs here). Field names only (no aliases); every required
    field must be given, and no unknown one (checked: a wrong name is a bug, not data)."""
    known = _TEMPLATES.get(cls)
    if known is None:
        known = _TEMPLATES[cls] = _template(cls)
    template, required, names = known
    given = values.keys()
    if not (required <= given <= names):
        raise TypeError(
            f"{cls.__name__}: missing {sorted(required - given)}, unknown {sorted(given - names)}"
        )
    state = template.copy()
    state.update(values)
    instance = cls.__new__(cls)
    object.__setattr__(instance, "__dict__", state)
    object.__setattr__(instance, "__pydantic_fields_set__", set(given))
    object.__setattr__(instance, "__pydantic_extra__", None)
    object.__setattr__(instance, "__pydantic_private__", None)
    return instance
