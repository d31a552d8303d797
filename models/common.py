"""Base model configuration and shared field types."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _to_utc(value: datetime) -> datetime:
    if value < _EPOCH:
        # Index keys are unsigned epoch milliseconds; no message was sent before 1970.
        raise ValueError("must not be before 1970-01-01T00:00:00Z")
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""An ISO-8601 timestamp with a timezone, normalised to UTC (serialised with ``Z``)."""

NonEmptyStr = Annotated[str, Field(min_length=1, max_length=512)]
JsonObject = dict[str, JsonValue]


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


class ErrorInfo(Frozen):
    """A tracking problem, k-msg's ``lastError``."""

    code: NonEmptyStr
    message: str = ""
