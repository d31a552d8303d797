"""Event factories shared by unit and integration tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

from deliverytrack.models.enums import MessageType, StatusSource, TrackingStatus
from deliverytrack.models.events import (
    CancelMessage,
    FailoverRequest,
    ProviderReportReceived,
    SendRecorded,
    SendWarning,
    StopTracking,
    UpdateStatus,
)
from deliverytrack.models.records import TrackingRecord
from deliverytrack.tables.hot.codec import HotRecord, to_model

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
_ids = count(1)
_UNIQUE: Any = object()


def next_event_id(prefix: str = "evt") -> str:
    return f"{prefix}-{next(_ids)}"


def send_recorded_factory(
    message_id: str = "msg-1",
    *,
    provider_id: str = "solapi",
    provider_message_id: str | None = _UNIQUE,
    type: MessageType = MessageType.SMS,
    requested_at: datetime = T0,
    scheduled_at: datetime | None = None,
    event_id: str | None = None,
    **extra: Any,
) -> SendRecorded:
    if provider_message_id is _UNIQUE:
        # Provider ids are unique per message ("pm-1" for the default "msg-1").
        provider_message_id = "pm-1" if message_id == "msg-1" else f"pm-{message_id}"
    return SendRecorded(
        event_id=event_id or next_event_id("send"),
        message_id=message_id,
        provider_id=provider_id,
        provider_message_id=provider_message_id,
        type=type,
        to="01012345678",
        from_="0212345678",
        requested_at=requested_at,
        scheduled_at=scheduled_at,
        **extra,
    )


def update_status_factory(
    status: TrackingStatus,
    message_id: str = "msg-1",
    *,
    at: datetime | None = None,
    event_id: str | None = None,
    source: StatusSource = StatusSource.MANUAL,
    **extra: Any,
) -> UpdateStatus:
    return UpdateStatus(
        event_id=event_id or next_event_id("upd"),
        message_id=message_id,
        status=status,
        at=at or T0 + timedelta(minutes=1),
        source=source,
        **extra,
    )


def cancel_factory(message_id: str = "msg-1", *, event_id: str | None = None) -> CancelMessage:
    return CancelMessage(
        event_id=event_id or next_event_id("cancel"),
        message_id=message_id,
        at=T0 + timedelta(minutes=2),
        reason="operator",
    )


def stop_tracking_factory(message_id: str = "msg-1") -> StopTracking:
    return StopTracking(event_id=next_event_id("stop"), message_id=message_id, at=T0)


def alimtalk_send_factory(message_id: str = "msg-ak", **extra: Any) -> SendRecorded:
    return send_recorded_factory(
        message_id,
        type=MessageType.ALIMTALK,
        failover=FailoverRequest(enabled=True, fallback_channel="sms", fallback_content="hi"),
        warnings=(SendWarning(code="FAILOVER_PARTIAL_PROVIDER", message="partial"),),
        **extra,
    )


def due_check_factory(record: Any, issued_at: datetime, due_at: datetime | None = None) -> Any:
    from deliverytrack.models.events import DueCheckIssued
    from deliverytrack.tables.due_index import effective_due

    due = due_at or effective_due(record)
    assert due is not None
    return DueCheckIssued(
        event_id=next_event_id("due"),
        message_id=record.message_id,
        due_at=due,
        issued_at=issued_at,
    )


def observed_factory(
    record: Any,
    outcome: str,
    observed_at: datetime,
    *,
    check_seq: int | None = None,
    **extra: Any,
) -> Any:
    from deliverytrack.models.events import StatusObserved

    return StatusObserved(
        event_id=next_event_id("obs"),
        message_id=record.message_id,
        check_seq=check_seq if check_seq is not None else record.check_seq,
        provider_id=record.provider_id,
        outcome=outcome,
        observed_at=observed_at,
        **extra,
    )


def report_factory(
    status: TrackingStatus,
    *,
    provider_id: str = "solapi",
    provider_message_id: str = "pm-1",
    received_at: datetime | None = None,
    event_id: str | None = None,
    **extra: Any,
) -> ProviderReportReceived:
    return ProviderReportReceived(
        event_id=event_id or next_event_id("report"),
        provider_id=provider_id,
        provider_message_id=provider_message_id,
        status=status,
        received_at=received_at or T0 + timedelta(minutes=1),
        **extra,
    )


def sent_record_factory(message_id: str = "msg-1", **kwargs: Any) -> TrackingRecord:
    """The record a send result creates (the fold's first step), for tests of what reads it."""
    from deliverytrack.tables.fold import fold

    record, _ = fold(None, send_recorded_factory(message_id, **kwargs))
    assert record is not None
    return record


def as_model(record: HotRecord | TrackingRecord | None) -> TrackingRecord | None:
    """A record the fold holds (its JSON dict on the hot path, or its model) as its model."""
    return to_model(record) if isinstance(record, HotRecord) else record
