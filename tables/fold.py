"""The pure fold: ``fold(record | None, event) -> (record | None, emitted)``.

No I/O, no clock, no randomness: time comes from the events, new ids are derived
(``<messageId>:<sequence>``), so replaying the same events gives the same records and the same
emitted events. The worker assigns what this returns, never anything else.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, TypeVar, assert_never

from deliverytrack.models.common import ErrorInfo, JsonObject, trusted
from deliverytrack.models.enums import (
    FINAL_STATUSES,
    FORWARD_RANK,
    MessageType,
    StatusSource,
    TrackingStatus,
    is_pollable,
)
from deliverytrack.models.events import (
    CancelMessage,
    DueCheckIssued,
    EventRejected,
    FailoverRequest,
    FailoverRequested,
    MessageEvent,
    PollRequested,
    ProviderIdLinked,
    ProviderReportReceived,
    ProviderStatus,
    PurgeRecord,
    RecordDeleted,
    RecordExpiryDue,
    RecordFailoverOutcome,
    ReportCorrelated,
    SendRecorded,
    StatusChanged,
    StatusObserved,
    StopTracking,
    UpdateStatus,
)
from deliverytrack.models.policy import DEFAULT_POLICY, FoldPolicy
from deliverytrack.models.records import StatusHistoryEntry, TrackingRecord
from deliverytrack.tables.changes import record_changes
from deliverytrack.tables.due_index import effective_due, epoch_ms
from deliverytrack.tables.failover import outcome_of_fallback, record_outcome, request_failover
from deliverytrack.tables.pii import plain_to, protect_send, redact_record_raw
from deliverytrack.tables.retention import expire, purge, retention_labels

T = TypeVar("T")
Emitted = (
    StatusChanged
    | EventRejected
    | PollRequested
    | ProviderIdLinked
    | FailoverRequested
    | RecordFailoverOutcome
    | RecordDeleted
)
FoldResult = tuple[TrackingRecord | None, tuple[Emitted, ...]]

# How many recent input eventIds a record remembers to drop duplicates. Structural guards
# (monotonic status, first send wins) cover anything older.
REMEMBERED_EVENT_IDS = 64

MISSING_PROVIDER_MESSAGE_ID = ErrorInfo(
    code="MISSING_PROVIDER_MESSAGE_ID", message="providerMessageId missing"
)
TRACKING_TIMEOUT = ErrorInfo(code="TRACKING_TIMEOUT", message="max tracking duration exceeded")
UNSUPPORTED_PROVIDER = ErrorInfo(
    code="UNSUPPORTED_PROVIDER", message="Provider has no getDeliveryStatus()"
)


def can_transition(current: TrackingStatus | None, new: TrackingStatus) -> bool:
    """The status model of ARCHITECTURE.md section 5: a record never regresses."""
    if current is None:
        return True
    if current == new or current in FINAL_STATUSES:
        return False
    if current == TrackingStatus.DELIVERED:
        return new == TrackingStatus.CLICKED
    if current == TrackingStatus.UNKNOWN:
        return new in (TrackingStatus.DELIVERED, TrackingStatus.FAILED)
    if new in (TrackingStatus.FAILED, TrackingStatus.CANCELLED, TrackingStatus.UNKNOWN):
        return True
    return FORWARD_RANK[new] > FORWARD_RANK[current]


def fold(
    record: TrackingRecord | None, event: MessageEvent, policy: FoldPolicy = DEFAULT_POLICY
) -> FoldResult:
    """Apply one event. Duplicates (a remembered ``eventId``) change nothing and emit nothing."""
    if record is not None and event.event_id in record.processed_event_ids:
        return record, ()
    new, emitted = _dispatch(record, event, policy)
    if (
        new is not None
        and new.status == TrackingStatus.FAILED
        and (record is None or record.status != TrackingStatus.FAILED)
    ):
        new, requests = request_failover(new, policy.api_failover, new.status_updated_at)
        emitted = (*emitted, *requests)
    if policy.status_change_record == "changes":
        emitted = tuple(
            _slim(out, record) if isinstance(out, StatusChanged) else out for out in emitted
        )
    return new, emitted


def _dispatch(record: TrackingRecord | None, event: MessageEvent, policy: FoldPolicy) -> FoldResult:
    match event:
        case SendRecorded():
            return _record_send(record, event, policy)
        case UpdateStatus():
            return _update_status(record, event)
        case CancelMessage():
            return _cancel(record, event)
        case StopTracking():
            return _stop_tracking(record, event)
        case DueCheckIssued():
            return _due_check(record, event, policy)
        case StatusObserved():
            return _observed(record, event, policy)
        case ReportCorrelated():
            return _reported(record, event, policy)
        case RecordFailoverOutcome():
            return _failover_outcome(record, event)
        case RecordExpiryDue():
            return expire(record, event)
        case PurgeRecord():
            return purge(record, event)
        case _:
            assert_never(event)


def replay(
    events: Iterable[MessageEvent],
    record: TrackingRecord | None = None,
    policy: FoldPolicy = DEFAULT_POLICY,
) -> tuple[TrackingRecord | None, tuple[Emitted, ...]]:
    """Reduce ``fold`` over events (one message's), collecting everything emitted."""
    emitted: list[Emitted] = []
    for event in events:
        record, out = fold(record, event, policy)
        emitted.extend(out)
    return record, tuple(emitted)


# --- recordSend ------------------------------------------------------------------------------


def _record_send(
    record: TrackingRecord | None, event: SendRecorded, policy: FoldPolicy
) -> FoldResult:
    if record is not None:
        # k-msg replaces the record on a repeated recordSend, resetting even terminal records.
        # Here the first send result wins; a repeat changes nothing.
        return record, ()
    recorded_at = event.recorded_at or event.requested_at
    provider_message_id = (event.provider_message_id or "").strip()
    last_error: ErrorInfo | None = None
    next_check_at: datetime | None
    if event.initial_status is not None and not provider_message_id:
        status = event.initial_status
        next_check_at = None
    elif not provider_message_id:
        status = TrackingStatus.UNKNOWN
        next_check_at = None
        last_error = MISSING_PROVIDER_MESSAGE_ID
    elif event.scheduled_at is not None:
        status = TrackingStatus.PENDING
        next_check_at = event.scheduled_at + timedelta(
            milliseconds=policy.polling.scheduled_grace_ms
        )
    else:
        status = event.initial_status or TrackingStatus.SENT
        next_check_at = event.requested_at + timedelta(milliseconds=policy.polling.initial_delay_ms)
    entry = trusted(
        StatusHistoryEntry,
        status=status,
        at=recorded_at,
        source=StatusSource.SYSTEM,
        provider=event.provider_id,
        details={"code": last_error.code, "message": last_error.message} if last_error else None,
        event_id=event.event_id,
    )
    # trusted: every value comes from the validated event or is derived from it here.
    new = trusted(
        TrackingRecord,
        message_id=event.message_id,
        provider_id=event.provider_id,
        provider_message_id=provider_message_id,
        type=event.type,
        requested_at=event.requested_at,
        scheduled_at=event.scheduled_at,
        status=status,
        status_updated_at=recorded_at,
        attempt_count=0,
        next_check_at=next_check_at,
        last_error=last_error,
        webhooks=event.webhooks,
        **retention_labels(event, policy.retention),
        sequence=1,
        status_history=(entry,),
        processed_event_ids=(event.event_id,),
        # to, from, metadata and their hashes, masks and ciphertexts (personal data policy)
        **protect_send(event, _send_metadata(event), policy.pii),
    )
    emitted: tuple[Emitted, ...] = (_status_changed(new, None, entry),)
    outcome = outcome_of_fallback(event)
    if outcome is not None:
        emitted = (*emitted, outcome)
    if provider_message_id:
        # Re-keyed by provider id for the correlator: reports only know the provider's id.
        # Validated (not trusted): the derived eventId and the ids must fit the link's schema,
        # or the send is refused here instead of leaving a record its reports cannot reach.
        link = ProviderIdLinked(
            event_id=f"{event.message_id}:link",
            provider_id=event.provider_id,
            provider_message_id=provider_message_id,
            message_id=event.message_id,
            linked_at=recorded_at,
        )
        emitted = (*emitted, link)
    return new, emitted


def _send_metadata(event: SendRecorded) -> JsonObject | None:
    metadata: dict[str, Any] = dict(event.metadata or {})
    if event.failover_of is not None:
        metadata["failoverOf"] = event.failover_of
    if event.custom_fields:
        metadata["customFields"] = dict(event.custom_fields)
    # k-msg writes the failover block for every AlimTalk send, with or without failover
    # options (kmsg-behaviour.md 3.2 step 4). A block the send result's own metadata brings
    # (a store upsert of a whole record) is kept unless failover options are given.
    if event.type == MessageType.ALIMTALK and (
        event.failover is not None or not isinstance(metadata.get("failover"), dict)
    ):
        request = event.failover or FailoverRequest()
        metadata["failover"] = {
            "request": request.model_dump(mode="json", by_alias=True, exclude_none=True),
            "sendWarningCodes": [warning.code for warning in event.warnings],
            "apiAttempt": {"attempted": False, "status": "not_attempted"},
        }
    return metadata or None


# --- commands --------------------------------------------------------------------------------


def _update_status(record: TrackingRecord | None, event: UpdateStatus) -> FoldResult:
    if record is None:
        return None, (_unknown_message(event.event_id, event.message_id),)
    updates: dict[str, Any] = {}
    for field in ("sent_at", "delivered_at", "failed_at", "clicked_at"):
        value = getattr(event, field)
        if value is not None:
            updates[field] = value
    if event.provider_status_code:
        updates["provider_status_code"] = event.provider_status_code
    if event.provider_status_message:
        updates["provider_status_message"] = event.provider_status_message
    if event.error is not None:
        updates["last_error"] = event.error
    if event.status == record.status:
        # Same status: no transition, but the provider fields it carries are applied (k-msg's
        # patch applies them); a regressing update stays refused as a whole (stale fields).
        fresh = {k: v for k, v in updates.items() if getattr(record, k) != v}
        return (_changed(record, event.event_id, fresh), ()) if fresh else (record, ())
    if not can_transition(record.status, event.status):
        return record, ()
    details: dict[str, Any] = dict(event.details or {})
    if event.error is not None:
        details["error"] = {"code": event.error.code, "message": event.error.message}
    return _apply_transition(
        record,
        status=event.status,
        at=event.at,
        source=event.source,
        event_id=event.event_id,
        provider=event.provider,
        details=details or None,
        updates=updates,
    )


def _failover_outcome(record: TrackingRecord | None, event: RecordFailoverOutcome) -> FoldResult:
    if record is None:
        return None, (_unknown_message(event.event_id, event.message_id),)
    updated = record_outcome(record, event)
    if updated is None:
        return _changed(record, event.event_id, {}), ()
    return _changed(updated, event.event_id, {}), ()


def _cancel(record: TrackingRecord | None, event: CancelMessage) -> FoldResult:
    if record is None:
        return None, (_unknown_message(event.event_id, event.message_id),)
    if not can_transition(record.status, TrackingStatus.CANCELLED):
        return record, ()
    return _apply_transition(
        record,
        status=TrackingStatus.CANCELLED,
        at=event.at,
        source=StatusSource.MANUAL,
        event_id=event.event_id,
        details={"reason": event.reason} if event.reason else None,
    )


def _stop_tracking(record: TrackingRecord | None, event: StopTracking) -> FoldResult:
    if record is None:
        return None, (_unknown_message(event.event_id, event.message_id),)
    if record.tracking_stopped_at is not None:
        return record, ()
    new = record.model_copy(
        update={
            "tracking_stopped_at": event.at,
            "next_check_at": None,
            "check_lease_until": None,
            "processed_event_ids": _remember(record, event.event_id),
        }
    )
    return new, ()


# --- polling (kmsg-behaviour.md 3.3) -----------------------------------------------------------


def _due_check(
    record: TrackingRecord | None, event: DueCheckIssued, policy: FoldPolicy
) -> FoldResult:
    """A timer saw the record due. Stale checks (the due time moved, or the record is not
    polled any more) change nothing; otherwise apply the rules that need no provider, or lease
    the record to the poller: the next tick will not see it due again until the lease ends."""
    if record is None:
        return None, ()
    due = effective_due(record)
    if due is None or epoch_ms(due) != epoch_ms(event.due_at):
        return record, ()
    now = event.issued_at
    checked: dict[str, Any] = {
        "attempt_count": record.attempt_count + 1,
        "last_checked_at": now,
        "check_lease_until": None,
    }
    if not record.provider_message_id:
        return _give_up(record, event.event_id, now, MISSING_PROVIDER_MESSAGE_ID, checked)
    if record.scheduled_at is not None:
        grace_end = record.scheduled_at + timedelta(milliseconds=policy.polling.scheduled_grace_ms)
        if now < grace_end:
            checked["next_check_at"] = grace_end
            return _changed(record, event.event_id, checked), ()
        tracking_start = grace_end
    else:
        tracking_start = record.requested_at
    max_ms = policy.polling.max_tracking_duration_ms
    if max_ms > 0 and now - tracking_start > timedelta(milliseconds=max_ms):
        return _give_up(record, event.event_id, now, TRACKING_TIMEOUT, checked)
    check_seq = record.check_seq + 1
    lease_until = now + timedelta(milliseconds=policy.polling.lease_ms)
    leased = _changed(
        record, event.event_id, {"check_seq": check_seq, "check_lease_until": lease_until}
    )
    request = PollRequested(
        event_id=f"{record.message_id}:poll:{check_seq}",
        message_id=record.message_id,
        check_seq=check_seq,
        provider_id=record.provider_id,
        provider_message_id=record.provider_message_id,
        type=record.type,
        to=plain_to(record),
        to_encrypted=record.to_encrypted,
        requested_at=record.requested_at,
        scheduled_at=record.scheduled_at,
        due_at=event.due_at,
        issued_at=now,
    )
    return leased, (request,)


def _observed(
    record: TrackingRecord | None, event: StatusObserved, policy: FoldPolicy
) -> FoldResult:
    """Reconcile what the poller saw. Only the answer to the current lease counts."""
    if record is None:
        return None, ()
    if record.check_lease_until is None or event.check_seq != record.check_seq:
        return record, ()
    now = event.observed_at
    attempts = record.attempt_count + 1
    checked: dict[str, Any] = {
        "attempt_count": attempts,
        "last_checked_at": now,
        "check_lease_until": None,
    }
    backoff = now + timedelta(milliseconds=policy.polling.backoff_delay_ms(attempts))
    match event.outcome:
        case "provider_not_found":
            error = ErrorInfo(
                code="PROVIDER_NOT_FOUND", message=f"Provider not found: {event.provider_id}"
            )
            return _give_up(record, event.event_id, now, error, checked)
        case "unsupported":
            if policy.polling.unsupported_provider_strategy == "unknown":
                return _give_up(record, event.event_id, now, UNSUPPORTED_PROVIDER, checked)
            checked.update(last_error=UNSUPPORTED_PROVIDER, next_check_at=backoff)
            return _changed(record, event.event_id, checked), ()
        case "error":
            observed = _present(event.error)
            error = ErrorInfo(code=observed.code, message=observed.message)
            if not observed.retryable:
                return _give_up(record, event.event_id, now, error, checked)
            checked.update(last_error=error, next_check_at=backoff)
            return _changed(record, event.event_id, checked), ()
        case "not_yet":
            checked.update(last_error=None, next_check_at=backoff)
            return _changed(record, event.event_id, checked), ()
        case "result":
            result = _present(event.result)
            if result.raw is not None and policy.pii.protects_plain:
                raw = redact_record_raw(result.raw, record, policy.pii)
                result = result.model_copy(update={"raw": raw})
            return _apply_result(record, event, result, checked, backoff)
        case _:
            assert_never(event.outcome)


def _apply_result(
    record: TrackingRecord,
    event: StatusObserved,
    result: ProviderStatus,
    checked: dict[str, Any],
    backoff: datetime,
) -> FoldResult:
    checked["last_error"] = None
    if result.status_code:
        checked["provider_status_code"] = result.status_code
    if result.status_message:
        checked["provider_status_message"] = result.status_message
    for field in ("sent_at", "delivered_at", "failed_at"):
        value = getattr(result, field)
        if value is not None:
            checked[field] = value
    if result.raw is not None:
        checked["raw"] = result.raw
    checked["next_check_at"] = backoff
    if not can_transition(record.status, result.status):
        # Same status, or one we refuse (a regression): keep polling, keep what we learnt.
        return _changed(record, event.event_id, checked), ()
    details: dict[str, Any] = {}
    if result.status_code:
        details["statusCode"] = result.status_code
    if result.status_message:
        details["statusMessage"] = result.status_message
    return _apply_transition(
        record,
        status=result.status,
        at=event.observed_at,
        source=StatusSource.PROVIDER,
        event_id=event.event_id,
        provider=event.provider_id,
        details=details or None,
        updates=checked,
    )


# --- provider reports (webhooks), after correlation --------------------------------------------


def _reported(
    record: TrackingRecord | None, event: ReportCorrelated, policy: FoldPolicy
) -> FoldResult:
    """A provider pushed a delivery report. Reports may come late, twice or out of order: the
    status model keeps the furthest status, and what a report teaches (codes, timestamps) is
    kept even when its status is refused. A report may resolve an UNKNOWN record."""
    if record is None:
        return None, (_unknown_message(event.event_id, event.message_id),)
    report = event.report
    updates: dict[str, Any] = {}
    if report.status_code:
        updates["provider_status_code"] = report.status_code
    if report.status_message:
        updates["provider_status_message"] = report.status_message
    for field in ("sent_at", "delivered_at", "failed_at"):
        value = getattr(report, field)
        if value is not None and getattr(record, field) is None:
            updates[field] = value
    if report.raw is not None:
        updates["raw"] = redact_record_raw(report.raw, record, policy.pii)
    if not can_transition(record.status, report.status):
        if not updates or report.status != record.status:
            # A refused (older) status teaches nothing we should overwrite.
            return _changed(record, event.event_id, {}), ()
        return _changed(record, event.event_id, updates), ()
    updates["last_error"] = None
    details: dict[str, Any] = {"providerMessageId": report.provider_message_id}
    if report.status_code:
        details["statusCode"] = report.status_code
    if report.status_message:
        details["statusMessage"] = report.status_message
    return _apply_transition(
        record,
        status=report.status,
        at=_report_time(report),
        source=StatusSource.WEBHOOK,
        event_id=event.event_id,
        provider=report.provider_id,
        details=details,
        updates=updates,
    )


def _report_time(report: ProviderReportReceived) -> datetime:
    """When the provider says the status happened, else when we received the report."""
    match report.status:
        case TrackingStatus.DELIVERED | TrackingStatus.CLICKED:
            return report.delivered_at or report.received_at
        case TrackingStatus.FAILED:
            return report.failed_at or report.received_at
        case TrackingStatus.SENT:
            return report.sent_at or report.received_at
        case _:
            return report.received_at


def _give_up(
    record: TrackingRecord,
    event_id: str,
    at: datetime,
    error: ErrorInfo,
    checked: dict[str, Any],
) -> FoldResult:
    """k-msg's terminal UNKNOWN outcomes (timeout, missing id, provider not found, ...)."""
    if not can_transition(record.status, TrackingStatus.UNKNOWN):
        return _changed(record, event_id, checked), ()
    return _apply_transition(
        record,
        status=TrackingStatus.UNKNOWN,
        at=at,
        source=StatusSource.SYSTEM,
        event_id=event_id,
        details={"code": error.code, "message": error.message},
        updates={**checked, "last_error": error},
    )


def _present(value: T | None) -> T:
    """StatusObserved's validator guarantees the payload of each outcome."""
    if value is None:
        raise ValueError("observation is missing the payload of its outcome")
    return value


def _changed(record: TrackingRecord, event_id: str, updates: dict[str, Any]) -> TrackingRecord:
    """The record with ``updates`` and the event remembered; no status change."""
    return record.model_copy(update={**updates, "processed_event_ids": _remember(record, event_id)})


# --- shared ----------------------------------------------------------------------------------


def _apply_transition(
    record: TrackingRecord,
    *,
    status: TrackingStatus,
    at: datetime,
    source: StatusSource,
    event_id: str,
    provider: str | None = None,
    details: JsonObject | None = None,
    updates: dict[str, Any] | None = None,
) -> FoldResult:
    entry = trusted(
        StatusHistoryEntry,
        status=status,
        at=at,
        source=source,
        provider=provider or record.provider_id,
        details=details,
        event_id=event_id,
    )
    changes: dict[str, Any] = dict(updates or {})
    changes.update(
        status=status,
        status_updated_at=at,
        sequence=record.sequence + 1,
        status_history=(*record.status_history, entry),
        processed_event_ids=_remember(record, event_id),
    )
    if not is_pollable(status) or record.tracking_stopped_at is not None:
        changes["next_check_at"] = None
        changes["check_lease_until"] = None
    new = record.model_copy(update=changes)
    return new, (_status_changed(new, record.status, entry),)


def _status_changed(
    record: TrackingRecord, previous: TrackingStatus | None, entry: StatusHistoryEntry
) -> StatusChanged:
    # trusted: every value comes from validated models (the checks of StatusChanged's
    # validator hold by construction); validating the embedded record again costs ~25 µs.
    return trusted(
        StatusChanged,
        event_id=f"{record.message_id}:{record.sequence}",
        message_id=record.message_id,
        sequence=record.sequence,
        previous_status=previous,
        status=record.status,
        source=entry.source,
        changed_at=entry.at,
        caused_by=entry.event_id,
        record=record,
    )


def _slim(change: StatusChanged, before: TrackingRecord | None) -> StatusChanged:
    """``change`` with what its transition changed in the record (``before`` it, the record
    the input found) instead of the record: ``DELIVERYTRACK_STATUS_CHANGE_RECORD=changes``."""
    if change.record is None:
        return change
    after = _json_of(change.record)
    changes = record_changes(None if before is None else _json_of(before), after)
    return change.model_copy(update={"record": None, "changes": changes})


def _json_of(record: TrackingRecord) -> dict[str, Any]:
    """The record's JSON values (what ``encode_record`` writes, as Python values)."""
    return record.model_dump(mode="json", by_alias=True, exclude_none=True)


def _remember(record: TrackingRecord, event_id: str) -> tuple[str, ...]:
    return (*record.processed_event_ids, event_id)[-REMEMBERED_EVENT_IDS:]


def _unknown_message(event_id: str, message_id: str) -> EventRejected:
    return EventRejected(
        event_id=event_id,
        message_id=message_id,
        reason="unknown-message",
        detail=f"no tracking record for messageId {message_id!r}",
    )
