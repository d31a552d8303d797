"""The pure correlator: provider reports meet the provider-id index.

``correlate(state | None, event) -> (state | None, emitted)``, keyed by
``providerId:providerMessageId``. A report whose key is linked to a messageId becomes a
``ReportCorrelated`` for the fold; one that arrives first is held on the state and released
when the link arrives, or dead-lettered when a ``HoldExpiryDue`` finds it past its holding time.
No I/O and no clock: the holding deadline comes from the report's ``receivedAt``, expiry from the
timer event's ``issuedAt``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import assert_never

from deliverytrack.models.common import utc_text
from deliverytrack.models.correlation import CorrelationState, HeldReport, SourceRef
from deliverytrack.models.events import (
    CorrelationEvent,
    DeadLetter,
    EventRejected,
    HoldExpiryDue,
    ProviderIdLinked,
    ProviderReportReceived,
    ReportCorrelated,
    provider_key,
)
from deliverytrack.tables.due_index import due_key, epoch_ms

REMEMBERED_REPORT_IDS = 64
MAX_HELD_PER_KEY = 32

CorrelationEmitted = ReportCorrelated | DeadLetter | EventRejected
CorrelationResult = tuple[CorrelationState | None, tuple[CorrelationEmitted, ...]]


def correlate(
    state: CorrelationState | None,
    event: CorrelationEvent,
    *,
    source: SourceRef | Callable[[], SourceRef],
    hold_ms: int,
) -> CorrelationResult:
    """``source``: where ``event`` came from, with the bytes a held report keeps for its dead
    letter (a callable is asked only when a report is held). With personal-data protection on,
    the caller passes the protected report and its bytes, never the input's
    (:func:`deliverytrack.tables.pii.protect_report`): the held state is on the changelog and
    in RocksDB."""
    if state is not None and not isinstance(event, HoldExpiryDue) and _collides(state, event):
        return state, (_collision(state, event),)
    match event:
        case ProviderReportReceived():
            return _report(state, event, source, hold_ms)
        case ProviderIdLinked():
            return _link(state, event)
        case HoldExpiryDue():
            return _expire(state, event.issued_at, hold_ms)
        case _:
            assert_never(event)


def _collides(state: CorrelationState, event: ProviderReportReceived | ProviderIdLinked) -> bool:
    """Whether ``event`` shares its key with another provider message: ``providerId`` may
    contain ``:``, so ("a:b", "c") and ("a", "b:c") are both keyed ``a:b:c``."""
    return (state.provider_id, state.provider_message_id) != (
        event.provider_id,
        event.provider_message_id,
    )


def _collision(
    state: CorrelationState, event: ProviderReportReceived | ProviderIdLinked
) -> EventRejected:
    """A report or link whose key another provider message holds: refused, so that neither
    message's reports go to the other (a report has no messageId yet: "")."""
    message_id = event.message_id if isinstance(event, ProviderIdLinked) else ""
    return EventRejected(
        event_id=event.event_id,
        message_id=message_id,
        reason="provider-key-collision",
        detail=f"providerId {event.provider_id!r} and providerMessageId "
        f"{event.provider_message_id!r} make the key "
        f"{provider_key(event.provider_id, event.provider_message_id)!r}, which providerId "
        f"{state.provider_id!r} and providerMessageId {state.provider_message_id!r} hold "
        "(a providerId with ':' in it)",
    )


def hold_deadline(state: CorrelationState | None) -> datetime | None:
    """When the oldest held report of this key expires (the hold-index entry), if any."""
    if state is None or not state.held:
        return None
    return min(held.held_until for held in state.held)


def _report(
    state: CorrelationState | None,
    report: ProviderReportReceived,
    source: SourceRef | Callable[[], SourceRef],
    hold_ms: int,
) -> CorrelationResult:
    if state is not None and report.event_id in state.processed_event_ids:
        return state, ()
    if state is None:
        state = CorrelationState(
            provider_id=report.provider_id, provider_message_id=report.provider_message_id
        )
    remembered = (*state.processed_event_ids, report.event_id)[-REMEMBERED_REPORT_IDS:]
    if state.message_id is not None:
        correlated = ReportCorrelated(
            event_id=report.event_id, message_id=state.message_id, report=report
        )
        return state.model_copy(update={"processed_event_ids": remembered}), (correlated,)
    if len(state.held) >= MAX_HELD_PER_KEY:
        rejected = EventRejected(
            event_id=report.event_id,
            message_id="",
            reason="hold-full",
            detail=f"{MAX_HELD_PER_KEY} reports already wait for a send result of "
            f"{provider_key(report.provider_id, report.provider_message_id)!r}",
        )
        return state, (rejected,)
    held = HeldReport(
        report=report,
        source=source if isinstance(source, SourceRef) else source(),
        held_until=report.received_at + timedelta(milliseconds=hold_ms),
    )
    return state.model_copy(
        update={"held": (*state.held, held), "processed_event_ids": remembered}
    ), ()


def _link(state: CorrelationState | None, event: ProviderIdLinked) -> CorrelationResult:
    if state is None:
        linked = CorrelationState(
            provider_id=event.provider_id,
            provider_message_id=event.provider_message_id,
            message_id=event.message_id,
        )
        return linked, ()
    if state.message_id is not None:
        if state.message_id == event.message_id:
            return state, ()
        rejected = EventRejected(
            event_id=event.event_id,
            message_id=event.message_id,
            reason="provider-id-conflict",
            detail=f"{provider_key(event.provider_id, event.provider_message_id)!r} already "
            f"belongs to messageId {state.message_id!r}; reports go to that message",
        )
        return state, (rejected,)
    released = tuple(
        ReportCorrelated(
            event_id=held.report.event_id, message_id=event.message_id, report=held.report
        )
        for held in state.held
    )
    return state.model_copy(update={"message_id": event.message_id, "held": ()}), released


def _expire(state: CorrelationState | None, now: datetime, hold_ms: int) -> CorrelationResult:
    if state is None or not state.held:
        return state, ()
    # Millisecond resolution, like the hold index the timer scans.
    now_ms = epoch_ms(now)
    expired = tuple(held for held in state.held if epoch_ms(held.held_until) <= now_ms)
    if not expired:
        return state, ()
    kept = tuple(held for held in state.held if epoch_ms(held.held_until) > now_ms)
    letters = tuple(_dead_letter(held, now, hold_ms) for held in expired)
    # Forget the expired ids: a provider's later retry of the report is tried afresh.
    gone = {held.report.event_id for held in expired}
    remembered = tuple(eid for eid in state.processed_event_ids if eid not in gone)
    if not kept and state.message_id is None and not remembered:
        return None, letters
    return state.model_copy(update={"held": kept, "processed_event_ids": remembered}), letters


def _dead_letter(held: HeldReport, now: datetime, hold_ms: int) -> DeadLetter:
    report = held.report
    key = provider_key(report.provider_id, report.provider_message_id)
    return held_dead_letter(
        held.source,
        key.encode(),
        "unmatched-report",
        f"no send result with providerId {report.provider_id!r} and providerMessageId "
        f"{report.provider_message_id!r} arrived within {hold_ms} ms of the report "
        f"(received {utc_text(report.received_at)})",
        now,
    )


def held_dead_letter(
    source: SourceRef, key: bytes, reason: str, error: str, at: datetime
) -> DeadLetter:
    """The dead letter of an input that was held in state (its bytes kept in ``source``)."""
    value_text: str | None = None
    if source.value_base64 is not None:
        try:
            value_text = base64.b64decode(source.value_base64).decode()
        except UnicodeDecodeError:
            value_text = None
    return DeadLetter(
        topic=source.topic,
        partition=source.partition,
        offset=source.offset,
        key_base64=base64.b64encode(key).decode(),
        value_base64=source.value_base64,
        value_text=value_text,
        reason=reason,
        error=error,
        failed_at=at,
    )


def hold_key_of(state: CorrelationState | None) -> bytes | None:
    """Hold-index key (big-endian deadline ms + provider key) of a state with held reports."""
    deadline = hold_deadline(state)
    if state is None or deadline is None:
        return None
    return due_key(deadline, provider_key(state.provider_id, state.provider_message_id))


def hold_index_change(
    old: CorrelationState | None, new: CorrelationState | None
) -> tuple[bytes | None, bytes | None]:
    """What to delete from and put into the hold index when ``old`` becomes ``new``."""
    old_key, new_key = hold_key_of(old), hold_key_of(new)
    if old_key == new_key:
        return None, None
    return old_key, new_key
