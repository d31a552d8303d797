"""Encoding and decoding of topic values, with schema upcasting.

Decoding runs: JSON parse -> upcast (``schemaVersion`` N -> current) -> validation. Any failure
raises :class:`DecodeError` with a reason fit for a dead-letter record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from deliverytrack.models.correlation import CorrelationState
from deliverytrack.models.events import (
    SCHEMA_VERSION,
    CommandEvent,
    DeadLetter,
    HoldExpiryDue,
    PollRequested,
    ProviderIdLinked,
    ProviderReportReceived,
    ReportCorrelated,
    SendRecorded,
    StatusChanged,
    StatusObserved,
    TimerEvent,
)
from deliverytrack.models.records import TrackingRecord

CommandAdapter: TypeAdapter[CommandEvent] = TypeAdapter(
    Annotated[CommandEvent, Field(discriminator="event_type")]
)
SendRecordedAdapter: TypeAdapter[SendRecorded] = TypeAdapter(SendRecorded)
DueCheckAdapter: TypeAdapter[TimerEvent] = TypeAdapter(
    Annotated[TimerEvent, Field(discriminator="event_type")]
)
PollRequestAdapter: TypeAdapter[PollRequested] = TypeAdapter(PollRequested)
ObservationAdapter: TypeAdapter[StatusObserved] = TypeAdapter(StatusObserved)
ProviderReportAdapter: TypeAdapter[ProviderReportReceived] = TypeAdapter(ProviderReportReceived)
StatusChangedAdapter: TypeAdapter[StatusChanged] = TypeAdapter(StatusChanged)
DeadLetterAdapter: TypeAdapter[DeadLetter] = TypeAdapter(DeadLetter)
RecordAdapter: TypeAdapter[TrackingRecord] = TypeAdapter(TrackingRecord)
LinkOrExpiryAdapter: TypeAdapter[ProviderIdLinked | HoldExpiryDue] = TypeAdapter(
    Annotated[ProviderIdLinked | HoldExpiryDue, Field(discriminator="event_type")]
)
ReportCorrelatedAdapter: TypeAdapter[ReportCorrelated] = TypeAdapter(ReportCorrelated)
CorrelationStateAdapter: TypeAdapter[CorrelationState] = TypeAdapter(CorrelationState)

T = TypeVar("T")
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

# (eventType, fromVersion) -> function returning the payload at fromVersion + 1.
# Register one small function per version step, e.g. ("SendRecorded", 1): upcast_v1_v2.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class DecodeError(ValueError):
    """An input value that cannot become an event. ``reason`` is a short category."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def upcast(payload: dict[str, Any], default_event_type: str | None = None) -> dict[str, Any]:
    """Bring a payload up to the current schema version, one registered step at a time."""
    version = payload.get("schemaVersion", SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DecodeError(
            "invalid-schema-version", f"schemaVersion must be an integer >= 1, got {version!r}"
        )
    event_type = payload.get("eventType", default_event_type)
    while version < SCHEMA_VERSION:
        step = UPCASTERS.get((str(event_type), version))
        if step is None:
            raise DecodeError(
                "unsupported-schema-version", f"no upcaster for {event_type} v{version}"
            )
        payload = step(payload)
        version += 1
        payload["schemaVersion"] = version
    if version > SCHEMA_VERSION:
        raise DecodeError(
            "unsupported-schema-version",
            f"schemaVersion {version} is newer than this worker understands ({SCHEMA_VERSION})",
        )
    return payload


def parse_json_object(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise DecodeError("empty-value", "the message has no value")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("malformed-json", str(exc)) from exc
    if not isinstance(payload, dict):
        raise DecodeError("malformed-json", f"expected a JSON object, got {type(payload).__name__}")
    return payload


def _fast(adapter: TypeAdapter[T], raw: bytes | None) -> T | None:
    """Most values are current and valid: validate the bytes in one pass (pydantic-core parses
    the JSON itself). Anything else takes the full path, which upcasts and explains errors."""
    if raw is None:
        return None
    try:
        return adapter.validate_json(raw)
    except ValidationError:
        return None


def _validate(adapter: TypeAdapter[T], payload: dict[str, Any]) -> T:
    try:
        return adapter.validate_python(payload)
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors(include_url=False)[:5]
        )
        raise DecodeError("schema-invalid", errors) from exc


def decode_send_result(raw: bytes | None) -> SendRecorded:
    fast = _fast(SendRecordedAdapter, raw)
    if fast is not None:
        return fast
    return _validate(SendRecordedAdapter, upcast(parse_json_object(raw), "SendRecorded"))


def decode_command(raw: bytes | None) -> CommandEvent:
    fast = _fast(CommandAdapter, raw)
    if fast is not None:
        return fast
    return _validate(CommandAdapter, upcast(parse_json_object(raw)))


def decode_provider_report(raw: bytes | None) -> ProviderReportReceived:
    fast = _fast(ProviderReportAdapter, raw)
    if fast is not None:
        return fast
    return _validate(
        ProviderReportAdapter, upcast(parse_json_object(raw), "ProviderReportReceived")
    )


def decode_link_or_expiry(raw: bytes | None) -> ProviderIdLinked | HoldExpiryDue:
    fast = _fast(LinkOrExpiryAdapter, raw)
    if fast is not None:
        return fast
    return _validate(LinkOrExpiryAdapter, upcast(parse_json_object(raw)))


def decode_correlated_report(raw: bytes | None) -> ReportCorrelated:
    fast = _fast(ReportCorrelatedAdapter, raw)
    if fast is not None:
        return fast
    return _validate(ReportCorrelatedAdapter, upcast(parse_json_object(raw), "ReportCorrelated"))


def decode_due_check(raw: bytes | None) -> TimerEvent:
    """A due check or a record expiry (both timers publish on the due-checks topic)."""
    fast = _fast(DueCheckAdapter, raw)
    if fast is not None:
        return fast
    payload = parse_json_object(raw)
    payload.setdefault("eventType", "DueCheckIssued")
    return _validate(DueCheckAdapter, upcast(payload))


def decode_poll_request(raw: bytes | None) -> PollRequested:
    fast = _fast(PollRequestAdapter, raw)
    if fast is not None:
        return fast
    return _validate(PollRequestAdapter, upcast(parse_json_object(raw), "PollRequested"))


def decode_observation(raw: bytes | None) -> StatusObserved:
    fast = _fast(ObservationAdapter, raw)
    if fast is not None:
        return fast
    return _validate(ObservationAdapter, upcast(parse_json_object(raw), "StatusObserved"))


def encode(model: BaseModel) -> bytes:
    """camelCase JSON, nulls omitted (an absent optional field reads back as null)."""
    return model.__pydantic_serializer__.to_json(model, by_alias=True, exclude_none=True)


_RECORD_FIELD = {"record"}


def encode_status_changed(event: StatusChanged, record_json: bytes | None = None) -> bytes:
    """Like :func:`encode`, but ``previousStatus`` is always present (null for the first).

    The record, the field that comes last, is spliced in as ``record_json`` when the caller
    has it already (the engine encodes it once for the status change and the changelog)."""
    head: bytes = event.__pydantic_serializer__.to_json(
        event, by_alias=True, exclude_none=True, exclude=_RECORD_FIELD
    )
    if event.previous_status is None:
        head = head.replace(b',"status":', b',"previousStatus":null,"status":', 1)
    if record_json is None:
        record_json = encode_record(event.record)
    return b"".join((head[:-1], b',"record":', record_json, b"}"))


def encode_record(record: TrackingRecord) -> bytes:
    return encode(record)


def decode_record(raw: bytes) -> TrackingRecord:
    return RecordAdapter.validate_json(raw)


def decode_correlation_state(raw: bytes) -> CorrelationState:
    return CorrelationStateAdapter.validate_json(raw)
