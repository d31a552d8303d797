"""Encoding and decoding of topic values, with schema upcasting.

Decoding runs: JSON parse -> upcast (``schemaVersion`` N -> current) -> validation. Any failure
raises :class:`DecodeError` with a reason fit for a dead-letter record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from deliverytrack.models.correlation import CommandHold, CorrelationState
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
from deliverytrack.models.retention import DeletionMarker

Marker = DeletionMarker | CommandHold
"""What a messageId without a record may have: a deletion marker or held commands."""

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
MarkerAdapter: TypeAdapter[Marker] = TypeAdapter(Marker)

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
    except Exception:  # noqa: BLE001 - the full path explains (or refuses) every failure
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


def _decoder(
    adapter: TypeAdapter[T], default_event_type: str | None = None
) -> Callable[[bytes | None], T]:
    """A decoder for one topic: the one-pass path, else parse -> upcast -> validate. Whatever
    goes wrong with the bytes (a validator's own error included) is a :class:`DecodeError`."""

    def decode(raw: bytes | None) -> T:
        fast = _fast(adapter, raw)
        if fast is not None:
            return fast
        try:
            payload = parse_json_object(raw)
            if default_event_type is not None:
                payload.setdefault("eventType", default_event_type)
            return _validate(adapter, upcast(payload))
        except DecodeError:
            raise
        except (RecursionError, ValueError, TypeError, OverflowError) as exc:
            raise DecodeError("schema-invalid", f"{type(exc).__name__}: {exc}") from exc

    return decode


decode_send_result = _decoder(SendRecordedAdapter, "SendRecorded")
decode_command = _decoder(CommandAdapter)
decode_provider_report = _decoder(ProviderReportAdapter, "ProviderReportReceived")
decode_link_or_expiry = _decoder(LinkOrExpiryAdapter)
decode_correlated_report = _decoder(ReportCorrelatedAdapter, "ReportCorrelated")
decode_due_check = _decoder(DueCheckAdapter, "DueCheckIssued")
"""A due check or a record expiry (both timers publish on the due-checks topic)."""
decode_poll_request = _decoder(PollRequestAdapter, "PollRequested")
decode_observation = _decoder(ObservationAdapter, "StatusObserved")


def encode(model: BaseModel) -> bytes:
    """camelCase JSON, nulls omitted (an absent optional field reads back as null)."""
    return model.__pydantic_serializer__.to_json(model, by_alias=True, exclude_none=True)


_RECORD_FIELD = {"record"}


def encode_status_changed(event: StatusChanged, record_json: bytes | None = None) -> bytes:
    """Like :func:`encode`, but ``previousStatus`` is always present (null for the first).

    The record, the field that comes last, is spliced in as ``record_json`` when the caller
    has it already (the engine encodes it once for the status change and the changelog). A
    slim status change (``changes`` instead of the record) is written as it is."""
    head: bytes = event.__pydantic_serializer__.to_json(
        event, by_alias=True, exclude_none=True, exclude=_RECORD_FIELD
    )
    if event.previous_status is None:
        head = head.replace(b',"status":', b',"previousStatus":null,"status":', 1)
    if event.record is None:
        return head
    if record_json is None:
        record_json = encode_record(event.record)
    return b"".join((head[:-1], b',"record":', record_json, b"}"))


def encode_record(record: TrackingRecord) -> bytes:
    return encode(record)


def decode_record(raw: bytes) -> TrackingRecord:
    return RecordAdapter.validate_json(raw)


def decode_correlation_state(raw: bytes) -> CorrelationState:
    return CorrelationStateAdapter.validate_json(raw)


def decode_marker(raw: bytes) -> Marker:
    return MarkerAdapter.validate_json(raw)
