"""Polling in the fold: due checks, leases, and k-msg's reconcile rules (kmsg-behaviour 3.3)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from deliverytrack.models.enums import StatusSource, TrackingStatus
from deliverytrack.models.events import PollRequested, StatusChanged
from deliverytrack.models.policy import DEFAULT_POLICY, FoldPolicy, PollingPolicy
from deliverytrack.models.records import TrackingRecord
from deliverytrack.tables.due_index import due_key_of, effective_due
from deliverytrack.tables.fold import fold
from tests.factories import (
    T0,
    due_check_factory,
    observed_factory,
    send_recorded_factory,
    update_status_factory,
)

S = TrackingStatus
SECOND = timedelta(seconds=1)


def sent_record(policy: PollingPolicy = DEFAULT_POLICY, **extra: object) -> TrackingRecord:
    record, _ = fold(None, send_recorded_factory(**extra), policy)  # type: ignore[arg-type]
    assert record is not None
    return record


def lease(
    record: TrackingRecord, now: datetime, policy: PollingPolicy = DEFAULT_POLICY
) -> tuple[TrackingRecord, tuple[object, ...]]:
    leased, emitted = fold(record, due_check_factory(record, now), policy)
    assert leased is not None
    return leased, emitted


def test_due_check_leases_the_record_and_requests_one_poll() -> None:
    record = sent_record()
    now = T0 + 31 * SECOND
    leased, emitted = lease(record, now)
    (request,) = emitted
    assert isinstance(request, PollRequested)
    assert request.event_id == "msg-1:poll:1"
    assert request.check_seq == 1
    assert (request.provider_id, request.provider_message_id) == ("solapi", "pm-1")
    assert request.due_at == T0 + 30 * SECOND
    assert leased.check_lease_until == now + timedelta(milliseconds=60_000)
    assert leased.status == S.SENT and leased.attempt_count == 0
    # The due index now points at the lease expiry: the next tick does not see it due.
    assert effective_due(leased) == leased.check_lease_until
    assert due_key_of(leased) != due_key_of(record)


def test_a_second_tick_during_the_lease_is_stale() -> None:
    record = sent_record()
    leased, _ = lease(record, T0 + 31 * SECOND)
    # The same due time again (the next tick raced the fold): nothing.
    again, emitted = fold(leased, due_check_factory(record, T0 + 36 * SECOND))
    assert again is leased and emitted == ()


def test_stale_due_time_is_ignored() -> None:
    record = sent_record()
    new, emitted = fold(record, due_check_factory(record, T0 + 40 * SECOND, T0 + 5 * SECOND))
    assert new is record and emitted == ()


def test_expired_lease_is_polled_again_and_the_late_answer_ignored() -> None:
    record = sent_record()
    leased, _ = lease(record, T0 + 31 * SECOND)
    assert leased.check_lease_until is not None
    released, (request,) = lease(leased, leased.check_lease_until)
    assert isinstance(request, PollRequested) and request.check_seq == 2
    late = observed_factory(released, "not_yet", T0 + 100 * SECOND, check_seq=1)
    same, emitted = fold(released, late)
    assert same is released and emitted == ()


def test_not_yet_follows_the_backoff_table() -> None:
    policy = FoldPolicy()
    record = sent_record(policy)
    now = T0 + 30 * SECOND
    waits = []
    for _ in range(7):
        leased, _ = lease(record, now, policy)
        record, emitted = fold(leased, observed_factory(leased, "not_yet", now), policy)
        assert record is not None and emitted == ()
        assert record.next_check_at is not None and record.last_error is None
        waits.append((record.next_check_at - now) // SECOND)
        now = record.next_check_at
    assert waits == [30, 120, 600, 1800, 7200, 7200, 7200]
    assert record.attempt_count == 7
    assert record.status_updated_at == T0  # polls without a status change do not move it


def test_delivered_result_ends_polling_with_one_provider_transition() -> None:
    """k-msg test 1: SENT -> DELIVERED with providerStatusCode "OK"."""
    policy = FoldPolicy(polling=PollingPolicy(initial_delay_ms=0))
    record = sent_record(policy)
    now = T0 + SECOND
    leased, _ = lease(record, now, policy)
    delivered_at = T0 + 500 * timedelta(milliseconds=1)
    observed = observed_factory(
        leased,
        "result",
        now,
        result={"status": "DELIVERED", "statusCode": "OK", "deliveredAt": delivered_at},
    )
    new, emitted = fold(leased, observed, policy)
    assert new is not None
    assert new.status == S.DELIVERED
    assert new.provider_status_code == "OK"
    assert new.delivered_at == delivered_at
    assert new.next_check_at is None and new.check_lease_until is None
    assert due_key_of(new) is None  # out of the due index, never polled again
    assert new.attempt_count == 1 and new.last_checked_at == now
    (change,) = emitted
    assert isinstance(change, StatusChanged)
    assert change.source == StatusSource.PROVIDER and change.previous_status == S.SENT


def test_same_status_result_keeps_polling_and_keeps_codes() -> None:
    record = sent_record()
    now = T0 + 30 * SECOND
    leased, _ = lease(record, now)
    observed = observed_factory(
        leased, "result", now, result={"status": "SENT", "statusCode": "3000"}
    )
    new, emitted = fold(leased, observed)
    assert new is not None and emitted == ()
    assert new.provider_status_code == "3000"
    assert new.status_updated_at == record.status_updated_at  # only moves with the status
    assert new.next_check_at == now + 30 * SECOND


def test_regressing_result_is_not_applied() -> None:
    record = sent_record()
    leased, _ = lease(record, T0 + 30 * SECOND)
    observed = observed_factory(
        leased, "result", T0 + 30 * SECOND, result={"status": "PENDING", "statusCode": "2000"}
    )
    new, emitted = fold(leased, observed)
    assert new is not None and new.status == S.SENT and emitted == ()


def test_scheduled_grace_defers_without_status_change() -> None:
    """k-msg test 3 (reached here by a due check issued before the grace ends)."""
    policy = FoldPolicy(
        polling=PollingPolicy(scheduled_grace_ms=1_000, max_tracking_duration_ms=1_000)
    )
    scheduled = T0 + 20 * SECOND
    record = sent_record(policy, scheduled_at=scheduled, requested_at=T0 - 30 * SECOND)
    early = T0 + 5 * SECOND
    new, emitted = fold(record, due_check_factory(record, early), policy)
    assert new is not None and emitted == ()
    assert new.status == S.PENDING and new.last_error is None
    assert new.next_check_at == scheduled + SECOND
    assert new.attempt_count == 1


def test_max_tracking_duration_gives_unknown_without_a_poll() -> None:
    policy = FoldPolicy(polling=PollingPolicy(max_tracking_duration_ms=60_000))
    record = sent_record(policy)
    new, emitted = fold(record, due_check_factory(record, T0 + 61 * SECOND), policy)
    assert new is not None
    assert new.status == S.UNKNOWN
    assert new.last_error is not None and new.last_error.code == "TRACKING_TIMEOUT"
    assert new.last_error.message == "max tracking duration exceeded"
    assert new.next_check_at is None
    assert [type(e) for e in emitted] == [StatusChanged]


def test_scheduled_tracking_starts_after_the_grace() -> None:
    policy = FoldPolicy(
        polling=PollingPolicy(max_tracking_duration_ms=60_000, scheduled_grace_ms=10_000)
    )
    scheduled = T0 + timedelta(hours=1)
    record = sent_record(policy, scheduled_at=scheduled)
    # An hour after the request but within the duration counted from scheduledAt + grace.
    _, emitted = lease(record, scheduled + 50 * SECOND, policy)
    assert [type(e) for e in emitted] == [PollRequested]


def test_provider_not_found_is_unknown() -> None:
    record = sent_record()
    leased, _ = lease(record, T0 + 30 * SECOND)
    new, _ = fold(leased, observed_factory(leased, "provider_not_found", T0 + 30 * SECOND))
    assert new is not None and new.status == S.UNKNOWN and new.last_error is not None
    assert new.last_error.code == "PROVIDER_NOT_FOUND"
    assert new.last_error.message == "Provider not found: solapi"


@pytest.mark.parametrize(("strategy", "status"), [("skip", S.SENT), ("unknown", S.UNKNOWN)])
def test_unsupported_provider_strategies(strategy: str, status: TrackingStatus) -> None:
    policy = FoldPolicy(polling=PollingPolicy(unsupported_provider_strategy=strategy))  # type: ignore[arg-type]
    record = sent_record(policy)
    now = T0 + 30 * SECOND
    leased, _ = lease(record, now, policy)
    new, _ = fold(leased, observed_factory(leased, "unsupported", now), policy)
    assert new is not None and new.status == status
    assert new.last_error is not None and new.last_error.code == "UNSUPPORTED_PROVIDER"
    if strategy == "skip":
        assert new.next_check_at == now + 30 * SECOND
    else:
        assert new.next_check_at is None


@pytest.mark.parametrize(("retryable", "status"), [(True, S.SENT), (False, S.UNKNOWN)])
def test_provider_errors(retryable: bool, status: TrackingStatus) -> None:
    record = sent_record()
    now = T0 + 30 * SECOND
    leased, _ = lease(record, now)
    error = {"code": "NETWORK_SERVICE_UNAVAILABLE", "message": "503", "retryable": retryable}
    new, emitted = fold(leased, observed_factory(leased, "error", now, error=error))
    assert new is not None and new.status == status
    assert new.last_error is not None and new.last_error.code == "NETWORK_SERVICE_UNAVAILABLE"
    assert (new.next_check_at is not None) == retryable
    assert len(emitted) == (0 if retryable else 1)


def test_manual_terminal_update_during_a_poll_drops_the_answer() -> None:
    record = sent_record()
    now = T0 + 30 * SECOND
    leased, _ = lease(record, now)
    cancelled, _ = fold(leased, update_status_factory(S.CANCELLED, at=now))
    assert cancelled is not None and cancelled.check_lease_until is None
    late = observed_factory(leased, "result", now, result={"status": "DELIVERED"})
    same, emitted = fold(cancelled, late)
    assert same is cancelled and emitted == ()
