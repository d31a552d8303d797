"""Golden JSON per (type, version), decoding errors, upcasting, round trips."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from deliverytrack.models import codec
from deliverytrack.models.codec import DecodeError
from deliverytrack.models.enums import MessageType, TrackingStatus
from deliverytrack.models.events import (
    CancelMessage,
    ProviderReportReceived,
    PurgeRecord,
    RecordExpiryDue,
    SendRecorded,
    StatusChanged,
    StopTracking,
    UpdateStatus,
)
from deliverytrack.tables.fold import fold
from tests.factories import T0

FIXTURES = Path(__file__).parents[2] / "fixtures" / "events"
DECODERS = {
    "SendRecorded": (codec.decode_send_result, SendRecorded),
    "UpdateStatus": (codec.decode_command, UpdateStatus),
    "CancelMessage": (codec.decode_command, CancelMessage),
    "StopTracking": (codec.decode_command, StopTracking),
    "ProviderReportReceived": (codec.decode_provider_report, ProviderReportReceived),
    "purge": (codec.decode_command, PurgeRecord),
    "RecordExpiryDue": (codec.decode_due_check, RecordExpiryDue),
}


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.name)
def test_golden_event_decodes(path: Path) -> None:
    event_type, version = path.name.split(".")[:2]
    decode, cls = DECODERS[event_type]
    event = decode(path.read_bytes())
    assert isinstance(event, cls)
    assert version == f"v{event.schema_version}"
    # Re-encoding and decoding again gives the same event.
    assert decode(codec.encode(event)) == event


def test_send_recorded_golden_fields() -> None:
    event = codec.decode_send_result((FIXTURES / "SendRecorded.v1.json").read_bytes())
    assert event.type == MessageType.ALIMTALK
    assert event.from_ == "0212345678"
    assert event.requested_at.isoformat() == "2026-11-23T09:00:00+00:00"  # normalised to UTC
    assert json.loads(codec.encode(event))["requestedAt"] == "2026-11-23T09:00:00Z"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "malformed-json"),
        (b"[1, 2]", "malformed-json"),
        (None, "empty-value"),
        (b'{"eventId": "x"}', "schema-invalid"),
        (b'{"eventId": "x", "schemaVersion": 99, "messageId": "m"}', "unsupported-schema-version"),
        (b'{"eventId": "x", "schemaVersion": "one"}', "invalid-schema-version"),
    ],
)
def test_bad_send_results_raise_decode_error(raw: bytes | None, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode_send_result(raw)
    assert info.value.reason == reason


def test_unknown_fields_are_ignored_on_inputs_and_refused_in_state() -> None:
    """A tolerant reader on the input topics: a producer may add a field before every worker
    is upgraded. Our own state stays strict."""
    good = json.loads((FIXTURES / "UpdateStatus.v1.json").read_bytes())
    event = codec.decode_command(json.dumps({**good, "colour": "red"}).encode())
    assert event == codec.decode_command(json.dumps(good).encode())
    send = json.loads((FIXTURES / "SendRecorded.v1.json").read_bytes())
    nested = {**send, "x": 1, "failover": {"enabled": True, "y": 2}, "webhooks": []}
    assert codec.decode_send_result(json.dumps(nested).encode()).failover is not None
    record = codec.encode_record(fold(None, codec.decode_send_result(json.dumps(send).encode()))[0])
    with pytest.raises(ValidationError, match="Extra inputs"):
        codec.decode_record(record[:-1] + b',"colour":"red"}')


def test_naive_times_and_unknown_event_types_are_rejected() -> None:
    good = json.loads((FIXTURES / "UpdateStatus.v1.json").read_bytes())
    with pytest.raises(DecodeError, match="schema-invalid"):
        codec.decode_command(json.dumps({**good, "at": "2026-11-23T09:00:05"}).encode())
    with pytest.raises(DecodeError, match="schema-invalid"):
        codec.decode_command(json.dumps({**good, "eventType": "Nope"}).encode())


def test_upcasters_run_one_step_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    def v1_to_v2(payload: dict[str, object]) -> dict[str, object]:
        payload = dict(payload)
        payload["status"] = payload.pop("state")
        return payload

    monkeypatch.setattr(codec, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(codec.UPCASTERS, ("UpdateStatus", 1), v1_to_v2)
    upcast = codec.upcast({"eventType": "UpdateStatus", "schemaVersion": 1, "state": "SENT"})
    assert upcast == {"eventType": "UpdateStatus", "schemaVersion": 2, "status": "SENT"}
    with pytest.raises(DecodeError, match="no upcaster for CancelMessage v1"):
        codec.upcast({"eventType": "CancelMessage", "schemaVersion": 1})


def test_record_and_status_change_round_trip() -> None:
    event = codec.decode_send_result((FIXTURES / "SendRecorded.v1.json").read_bytes())
    record, (change, _link) = fold(None, event)
    assert record is not None
    assert codec.decode_record(codec.encode_record(record)) == record
    body = json.loads(codec.encode_status_changed(change))  # type: ignore[arg-type]
    assert body["previousStatus"] is None
    assert body["status"] == TrackingStatus.SENT
    assert body["eventId"] == "order-1234-sms:1"
    assert body["record"]["messageId"] == "order-1234-sms"
    assert codec.StatusChangedAdapter.validate_json(codec.encode_status_changed(change)) == change


def test_status_change_with_the_record_spliced_in_is_pydantic_s_encoding() -> None:
    """The engine passes the record's JSON it encoded already; the bytes must be the same as
    pydantic's own encoding of the whole event (previousStatus null included)."""
    event = codec.decode_send_result((FIXTURES / "SendRecorded.v1.json").read_bytes())
    record, (first, _link) = fold(None, event)
    assert record is not None and isinstance(first, StatusChanged)
    update = UpdateStatus(
        event_id="u-1", message_id=record.message_id, status=TrackingStatus.DELIVERED, at=T0
    )
    _, (second,) = fold(record, update)
    assert isinstance(second, StatusChanged)
    for change in (first, second):
        whole = change.__pydantic_serializer__.to_json(change, by_alias=True, exclude_none=True)
        if change.previous_status is None:
            whole = whole.replace(b',"status":', b',"previousStatus":null,"status":', 1)
        spliced = codec.encode_status_changed(change, codec.encode_record(change.record))
        assert spliced == codec.encode_status_changed(change) == whole


def test_a_time_before_1970_is_refused_at_decode() -> None:
    """Index keys are unsigned epoch ms: such an event must be dead-lettered, not crash a
    RocksDB write (a poison pill that would stop the fold)."""
    import orjson
    import pytest

    from deliverytrack.models.codec import DecodeError, decode_send_result, encode
    from tests.factories import send_recorded_factory

    payload = orjson.loads(encode(send_recorded_factory("old")))
    payload["requestedAt"] = "1900-01-01T00:00:00Z"
    with pytest.raises(DecodeError) as info:
        decode_send_result(orjson.dumps(payload))
    assert "1970" in info.value.detail


# Every fast decoder (one-pass validate_json) and its strict fallback must agree: JSON has no
# NaN or Infinity, and schemaVersion is the integer 1 (not true, not 1.0).
FAST_DECODERS = [
    ("SendRecorded.v1.json", codec.decode_send_result, "metadata"),
    ("UpdateStatus.v1.json", codec.decode_command, "details"),
    ("ProviderReportReceived.v1.json", codec.decode_provider_report, "raw"),
]


@pytest.mark.parametrize(("fixture", "decode", "field"), FAST_DECODERS)
@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1E+999"])
def test_non_finite_numbers_in_json_objects_are_refused(
    fixture: str, decode: Callable[[bytes | None], object], field: str, number: bytes
) -> None:
    good = json.loads((FIXTURES / fixture).read_bytes())
    good[field] = {"nested": [1, {"n": "__N__"}]}
    raw = json.dumps(good).encode().replace(b'"__N__"', number)
    with pytest.raises(DecodeError) as info:
        decode(raw)
    assert info.value.reason == "malformed-json"
    # The same text in a string is data, not a number.
    assert decode(json.dumps(good).encode().replace(b"__N__", number)) is not None


@pytest.mark.parametrize(("fixture", "decode", "field"), FAST_DECODERS)
@pytest.mark.parametrize("version", [b"true", b"1.0", b'"1"'])
def test_schema_version_must_be_the_integer_one(
    fixture: str, decode: Callable[[bytes | None], object], field: str, version: bytes
) -> None:
    original = (FIXTURES / fixture).read_bytes()
    raw = original.replace(b'"schemaVersion": 1', b'"schemaVersion": ' + version)
    assert raw != original
    with pytest.raises(DecodeError) as info:
        decode(raw)
    assert info.value.reason == "invalid-schema-version"


def test_models_built_in_python_refuse_non_finite_numbers() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="must be finite"):
        UpdateStatus(
            event_id="u-1",
            message_id="m-1",
            status=TrackingStatus.DELIVERED,
            at=T0,
            source="manual",
            details={"score": [1.0, float("nan")]},
        )
    send = codec.decode_send_result((FIXTURES / "SendRecorded.v1.json").read_bytes())
    record, _ = fold(None, send)
    assert record is not None
    raw = codec.encode_record(record.model_copy(update={"metadata": {"x": 0.5}}))
    assert codec.decode_record(raw).metadata == {"x": 0.5}
    with pytest.raises(ValidationError, match="must be finite"):
        codec.decode_record(raw.replace(b'"x":0.5', b'"x":NaN'))
