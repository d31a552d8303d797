"""The pure fold: k-msg's recordSend rules, the status model, commands, idempotency."""

from __future__ import annotations

from datetime import timedelta

import pytest

from deliverytrack.models.codec import decode_link_or_expiry, encode
from deliverytrack.models.enums import MessageType, StatusSource, TrackingStatus
from deliverytrack.models.events import EventRejected, ProviderIdLinked, SendWarning, StatusChanged
from deliverytrack.models.policy import FoldPolicy, PollingPolicy
from deliverytrack.tables.fold import can_transition, fold, replay
from tests.factories import (
    T0,
    alimtalk_send_factory,
    cancel_factory,
    send_recorded_factory,
    stop_tracking_factory,
    update_status_factory,
)

S = TrackingStatus


# --- recordSend (kmsg-behaviour.md 3.2) ---------------------------------------------------------


def test_unscheduled_send_starts_sent_and_is_due_after_initial_delay() -> None:
    record, emitted = fold(None, send_recorded_factory())
    assert record is not None
    assert record.status == S.SENT
    assert record.next_check_at == T0 + timedelta(milliseconds=30_000)
    assert record.attempt_count == 0
    assert record.sent_at is None  # k-msg does not synthesise sentAt
    assert record.status_updated_at == T0
    assert record.provider_message_id == "pm-1"
    change, link = emitted
    assert isinstance(change, StatusChanged)
    assert change.previous_status is None
    assert change.status == S.SENT
    assert change.event_id == "msg-1:1"
    assert change.record == record
    # Re-keyed by provider id so that provider webhooks can find the record.
    assert link == ProviderIdLinked(
        event_id="msg-1:link",
        provider_id=record.provider_id,
        provider_message_id="pm-1",
        message_id="msg-1",
        linked_at=T0,
    )


def test_scheduled_send_starts_pending_with_scheduled_grace() -> None:
    scheduled = T0 + timedelta(seconds=5)
    policy = FoldPolicy(polling=PollingPolicy(scheduled_grace_ms=1_000))
    record, _ = fold(None, send_recorded_factory(scheduled_at=scheduled), policy)
    assert record is not None
    assert record.status == S.PENDING
    assert record.next_check_at == scheduled + timedelta(seconds=1)
    assert record.scheduled_at == scheduled


@pytest.mark.parametrize("provider_message_id", [None, "", "   "])
def test_missing_provider_message_id_is_unknown(provider_message_id: str | None) -> None:
    record, emitted = fold(None, send_recorded_factory(provider_message_id=provider_message_id))
    assert record is not None
    assert record.status == S.UNKNOWN
    assert record.next_check_at is None  # not polled
    assert record.last_error is not None
    assert record.last_error.code == "MISSING_PROVIDER_MESSAGE_ID"
    assert record.last_error.message == "providerMessageId missing"
    assert record.provider_message_id == ""
    (change,) = emitted
    assert isinstance(change, StatusChanged) and change.status == S.UNKNOWN


def test_provider_message_id_is_trimmed() -> None:
    record, _ = fold(None, send_recorded_factory(provider_message_id="  pm-9 \n"))
    assert record is not None and record.provider_message_id == "pm-9"


def test_ids_derived_from_long_ids_fit_their_schema() -> None:
    """The provider-id link's eventId is ``<messageId>:link``: with a 510-character messageId
    it is longer than a producer id may be (512). Derived ids may be up to 2,048 characters,
    so every valid send folds and its link decodes again (it was a fold-error before)."""
    send = send_recorded_factory("m" * 510, provider_message_id="p" * 512)
    record, emitted = fold(None, send)
    assert record is not None
    link = next(out for out in emitted if isinstance(out, ProviderIdLinked))
    assert decode_link_or_expiry(encode(link)) == link


def test_recorded_at_is_the_status_time_when_given() -> None:
    later = T0 + timedelta(seconds=3)
    record, _ = fold(None, send_recorded_factory(recorded_at=later))
    assert record is not None
    assert record.status_updated_at == later
    assert record.next_check_at == T0 + timedelta(seconds=30)  # still from requestedAt


def test_repeated_send_result_does_not_reset_the_record() -> None:
    record, _ = fold(None, send_recorded_factory())
    record, _ = fold(record, update_status_factory(S.DELIVERED))
    again, emitted = fold(record, send_recorded_factory())  # new eventId, same messageId
    assert again is record
    assert emitted == ()


def test_alimtalk_failover_metadata_is_kept() -> None:
    record, _ = fold(None, alimtalk_send_factory(custom_fields={"tenant": "t1"}))
    assert record is not None and record.metadata is not None
    assert record.metadata["customFields"] == {"tenant": "t1"}
    assert record.metadata["failover"] == {
        "request": {"enabled": True, "fallbackChannel": "sms", "fallbackContent": "hi"},
        "sendWarningCodes": ["FAILOVER_PARTIAL_PROVIDER"],
        "apiAttempt": {"attempted": False, "status": "not_attempted"},
    }


def test_an_alimtalk_send_without_failover_options_gets_the_block() -> None:
    """k-msg 3.2 step 4: every AlimTalk send records metadata.failover (request,
    sendWarningCodes, apiAttempt not_attempted), with or without failover options."""
    send = send_recorded_factory(
        "msg-ak2",
        type=MessageType.ALIMTALK,
        warnings=(SendWarning(code="FAILOVER_UNSUPPORTED_PROVIDER"),),
    )
    record, _ = fold(None, send)
    assert record is not None and record.metadata is not None
    assert record.metadata["failover"] == {
        "request": {},
        "sendWarningCodes": ["FAILOVER_UNSUPPORTED_PROVIDER"],
        "apiAttempt": {"attempted": False, "status": "not_attempted"},
    }


def test_a_failover_block_the_send_brings_is_kept_without_failover_options() -> None:
    """A store upsert publishes a whole record's metadata: its block (an attempt made) stays;
    failover options on the send would replace it."""
    block = {
        "request": {"enabled": True},
        "sendWarningCodes": ["FAILOVER_PARTIAL_PROVIDER"],
        "apiAttempt": {"attempted": True, "status": "completed", "outcome": "sent"},
    }
    send = send_recorded_factory(
        "msg-ak3", type=MessageType.ALIMTALK, metadata={"failover": block, "x": 1}
    )
    record, _ = fold(None, send)
    assert record is not None and record.metadata == {"failover": block, "x": 1}
    replaced, _ = fold(None, alimtalk_send_factory("msg-ak4", metadata={"failover": block}))
    assert replaced is not None and replaced.metadata is not None
    assert replaced.metadata["failover"]["apiAttempt"] == {
        "attempted": False,
        "status": "not_attempted",
    }


def test_metadata_is_absent_when_empty() -> None:
    record, _ = fold(None, send_recorded_factory())
    assert record is not None and record.metadata is None


# --- status model (ARCHITECTURE.md section 5) ---------------------------------------------------

ALLOWED = [
    (S.QUEUED, S.SENDING),
    (S.QUEUED, S.SENT),
    (S.PENDING, S.SENT),
    (S.SENDING, S.SENT),
    (S.SENT, S.DELIVERED),
    (S.DELIVERED, S.CLICKED),
    (S.SENT, S.FAILED),
    (S.PENDING, S.CANCELLED),
    (S.SENT, S.UNKNOWN),
    (S.UNKNOWN, S.DELIVERED),
    (S.UNKNOWN, S.FAILED),
    (S.QUEUED, S.DELIVERED),
]
REFUSED = [
    (S.SENT, S.SENT),
    (S.SENT, S.PENDING),  # k-msg allows this non-terminal regression; we do not
    (S.PENDING, S.QUEUED),
    (S.DELIVERED, S.SENT),
    (S.DELIVERED, S.FAILED),
    (S.DELIVERED, S.CANCELLED),
    (S.FAILED, S.SENT),  # k-msg's tracker allows FAILED -> SENT [quirk]
    (S.FAILED, S.DELIVERED),
    (S.CANCELLED, S.SENT),
    (S.CLICKED, S.DELIVERED),
    (S.UNKNOWN, S.SENT),
    (S.UNKNOWN, S.CANCELLED),
]


@pytest.mark.parametrize(("current", "new"), ALLOWED)
def test_allowed_transitions(current: TrackingStatus, new: TrackingStatus) -> None:
    assert can_transition(current, new)


@pytest.mark.parametrize(("current", "new"), REFUSED)
def test_refused_transitions(current: TrackingStatus, new: TrackingStatus) -> None:
    assert not can_transition(current, new)


def test_manual_update_moves_forward_with_one_status_change() -> None:
    record, _ = fold(None, send_recorded_factory())
    at = T0 + timedelta(minutes=1)
    update = update_status_factory(
        S.DELIVERED, at=at, delivered_at=at, provider_status_code="4000", details={"by": "ops"}
    )
    new, emitted = fold(record, update)
    assert new is not None
    assert new.status == S.DELIVERED
    assert new.delivered_at == at
    assert new.provider_status_code == "4000"
    assert new.status_updated_at == at
    assert new.next_check_at is None  # out of the due index
    assert new.sequence == 2
    assert [entry.status for entry in new.status_history] == [S.SENT, S.DELIVERED]
    assert new.status_history[-1].source == StatusSource.MANUAL
    assert new.status_history[-1].details == {"by": "ops"}
    (change,) = emitted
    assert isinstance(change, StatusChanged)
    assert (change.previous_status, change.status, change.source) == (
        S.SENT,
        S.DELIVERED,
        StatusSource.MANUAL,
    )
    assert change.event_id == "msg-1:2"
    assert change.caused_by == update.event_id


def test_backward_update_is_refused_and_emits_nothing() -> None:
    record, _ = fold(None, send_recorded_factory())
    record, _ = fold(record, update_status_factory(S.DELIVERED))
    new, emitted = fold(record, update_status_factory(S.SENT))
    assert new is record
    assert emitted == ()


def test_update_keeps_next_check_between_pollable_statuses() -> None:
    record, _ = fold(None, send_recorded_factory(scheduled_at=T0 + timedelta(hours=1)))
    assert record is not None
    new, _ = fold(record, update_status_factory(S.SENT))
    assert new is not None and new.next_check_at == record.next_check_at


def test_update_error_is_kept_as_last_error() -> None:
    record, _ = fold(None, send_recorded_factory())
    new, _ = fold(
        record,
        update_status_factory(S.FAILED, error={"code": "3104", "message": "not a kakao user"}),
    )
    assert new is not None and new.last_error is not None
    assert new.last_error.code == "3104"
    assert new.status_history[-1].details == {
        "error": {"code": "3104", "message": "not a kakao user"}
    }


def test_cancel_moves_to_cancelled_once() -> None:
    record, _ = fold(None, send_recorded_factory())
    new, emitted = fold(record, cancel_factory())
    assert new is not None and new.status == S.CANCELLED and len(emitted) == 1
    again, emitted = fold(new, cancel_factory())
    assert again is new and emitted == ()


def test_cancel_after_delivery_is_refused() -> None:
    record, _ = fold(None, send_recorded_factory())
    record, _ = fold(record, update_status_factory(S.DELIVERED))
    new, emitted = fold(record, cancel_factory())
    assert new is record and emitted == ()


def test_stop_tracking_stops_polling_without_a_status_change() -> None:
    record, _ = fold(None, send_recorded_factory())
    new, emitted = fold(record, stop_tracking_factory())
    assert new is not None
    assert new.status == S.SENT
    assert new.next_check_at is None
    assert new.tracking_stopped_at == T0
    assert emitted == ()
    # A later report still applies, and polling stays off.
    later, emitted = fold(new, update_status_factory(S.DELIVERED))
    assert later is not None and later.status == S.DELIVERED and len(emitted) == 1


@pytest.mark.parametrize(
    "command", [update_status_factory(S.DELIVERED), cancel_factory(), stop_tracking_factory()]
)
def test_command_for_unknown_message_is_rejected(command: object) -> None:
    new, emitted = fold(None, command)  # type: ignore[arg-type]
    assert new is None
    (rejection,) = emitted
    assert isinstance(rejection, EventRejected)
    assert rejection.reason == "unknown-message"


# --- idempotency ---------------------------------------------------------------------------------


def test_duplicate_event_id_changes_nothing() -> None:
    send = send_recorded_factory()
    record, _ = fold(None, send)
    update = update_status_factory(S.SENDING)
    # SENT -> SENDING is refused, so use a record that can still move.
    record, _ = fold(record, update_status_factory(S.FAILED, event_id="fail-1"))
    again, emitted = fold(record, update_status_factory(S.FAILED, event_id="fail-1"))
    assert again is record and emitted == ()
    assert update.event_id not in (record.processed_event_ids if record else ())


def test_duplicate_event_id_is_dropped_even_when_the_transition_would_apply() -> None:
    record, _ = fold(None, send_recorded_factory(event_id="s-1"))
    record, _ = fold(record, update_status_factory(S.DELIVERED, event_id="u-1"))
    # Same eventId, different content (a producer bug or a replayed id): dropped by id.
    again, emitted = fold(record, update_status_factory(S.CLICKED, event_id="u-1"))
    assert again is record and emitted == ()


def test_replay_collects_everything_emitted() -> None:
    events = [
        send_recorded_factory(),
        update_status_factory(S.DELIVERED),
        update_status_factory(S.CLICKED),
    ]
    record, emitted = replay(events)
    assert record is not None and record.status == S.CLICKED
    assert [e.event_id for e in emitted if isinstance(e, StatusChanged)] == [
        "msg-1:1",
        "msg-1:2",
        "msg-1:3",
    ]


def test_a_same_status_update_refreshes_provider_fields_without_a_transition() -> None:
    from deliverytrack.tables.fold import fold as fold_event

    record, _ = fold_event(None, send_recorded_factory("m-same"))
    assert record is not None
    same = update_status_factory(
        TrackingStatus.SENT, "m-same", provider_status_code="2000", provider_status_message="ok"
    )
    new, emitted = fold_event(record, same)
    assert new is not None and emitted == ()
    assert (new.provider_status_code, new.provider_status_message) == ("2000", "ok")
    assert (new.status, new.sequence, new.status_history) == (
        record.status,
        record.sequence,
        record.status_history,
    )
    again, emitted = fold_event(new, same)  # duplicate: no-op
    assert again is new and emitted == ()
    # A regressing update stays refused as a whole, fields included.
    delivered, _ = fold_event(new, update_status_factory(TrackingStatus.DELIVERED, "m-same"))
    assert delivered is not None
    stale = update_status_factory(TrackingStatus.SENT, "m-same", provider_status_code="9999")
    assert fold_event(delivered, stale) == (delivered, ())
