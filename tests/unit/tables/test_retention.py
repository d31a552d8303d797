"""Retention and cleanup, pure: days and buckets, deadlines, expiry keys, and the fold of
expiries, purges and deletion markers (stale, duplicate, deterministic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deliverytrack.models.codec import decode_command, decode_due_check
from deliverytrack.models.enums import TrackingStatus
from deliverytrack.models.events import (
    DueCheckIssued,
    EventRejected,
    MessageEvent,
    PurgeRecord,
    RecordDeleted,
    RecordExpiryDue,
    SendRecorded,
    StatusChanged,
    UpdateStatus,
)
from deliverytrack.models.policy import FoldPolicy, PollingPolicy
from deliverytrack.models.records import TrackingRecord
from deliverytrack.models.retention import DeletionMarker, RetentionPolicy
from deliverytrack.models.settings import Settings
from deliverytrack.tables.deletion import fold_marked
from deliverytrack.tables.due_index import due_key, epoch_ms, from_epoch_ms
from deliverytrack.tables.fold import fold
from deliverytrack.tables.retention import (
    expiry_index_change,
    expiry_key_of,
    expiry_of,
    resolve_retention_days,
    to_retention_bucket_ym,
)
from tests.factories import (
    T0,
    send_recorded_factory,
    stop_tracking_factory,
    update_status_factory,
)

S = TrackingStatus
ENABLED = RetentionPolicy(enabled=True)
POLICY = FoldPolicy(retention=ENABLED)
DAY = timedelta(days=1)


def created(policy: PollingPolicy = POLICY, **send: Any) -> TrackingRecord:
    record, _ = fold(None, send_recorded_factory(**send), policy)
    assert record is not None
    return record


def delivered(policy: PollingPolicy = POLICY, **send: Any) -> TrackingRecord:
    record, _ = fold(created(policy, **send), update_status_factory(S.DELIVERED), policy)
    assert record is not None
    return record


def expiry(record: TrackingRecord, issued_at: datetime, at: datetime | None = None) -> Any:
    due = expiry_of(record)
    expire_at = at or (due[0] if due else T0)
    return RecordExpiryDue(
        event_id=f"expire:{record.message_id}:{epoch_ms(expire_at)}",
        message_id=record.message_id,
        expire_at=expire_at,
        issued_at=issued_at,
    )


def purge(message_id: str = "msg-1", event_id: str = "purge-1") -> PurgeRecord:
    return PurgeRecord(event_id=event_id, message_id=message_id, at=T0 + DAY, reason="cleanup")


# --- days and buckets (k-msg resolveRetentionDays / toRetentionBucketYm) -----------------------


@pytest.mark.parametrize(
    ("overrides", "retention_class", "days"),
    [
        ({}, "opsLogs", 90),
        ({}, "telecomMetadata", 365),
        ({}, "billingEvidence", 1825),
        ({"opsLogs": 30}, "opsLogs", 30),
        ({"opsLogs": 30}, "telecomMetadata", 365),  # other classes keep the preset
        ({"opsLogs": 0}, "opsLogs", 90),  # k-msg: only a number > 0 overrides
        ({"opsLogs": -5}, "opsLogs", 90),
        ({"billingEvidence": 0.5}, "billingEvidence", 0.5),
    ],
)
def test_retention_days_are_the_preset_unless_overridden(
    overrides: dict[str, float], retention_class: Any, days: float
) -> None:
    policy = RetentionPolicy(tenant_override_days=overrides)
    assert resolve_retention_days(policy, retention_class) == days


@pytest.mark.parametrize(
    ("moment", "ym"),
    [
        (datetime(2027, 1, 1, tzinfo=UTC), 202701),
        (datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), 202612),
        # 2027-01-01 08:30 in Seoul is still 2026-12 in UTC.
        (datetime(2027, 1, 1, 8, 30, tzinfo=timezone(timedelta(hours=9))), 202612),
        (datetime(2026, 12, 31, 20, 0, tzinfo=UTC).astimezone(UTC) + timedelta(hours=5), 202701),
    ],
)
def test_bucket_is_the_utc_year_and_month(moment: datetime, ym: int) -> None:
    assert to_retention_bucket_ym(moment) == ym


def test_new_records_get_class_bucket_and_deadline_from_the_policy() -> None:
    record = created()  # requested 2026-11-23 09:00Z, default class telecomMetadata (365 d)
    assert record.retention_class == "telecomMetadata"
    assert record.retention_until == T0 + 365 * DAY
    assert record.retention_bucket_ym == 202711
    ops = created(message_id="m-ops", retention_class="opsLogs")
    assert (ops.retention_class, ops.retention_bucket_ym) == ("opsLogs", 202702)
    billing = created(message_id="m-b", retention_class="billingEvidence")
    assert billing.retention_bucket_ym == 203111  # 1825 days, one leap day on the way
    overridden = FoldPolicy(
        retention=RetentionPolicy(enabled=True, tenant_override_days={"telecomMetadata": 10})
    )
    assert created(overridden).retention_until == T0 + 10 * DAY


def test_labels_are_set_when_disabled_but_no_deadline() -> None:
    record = created(FoldPolicy())
    assert record.retention_class == "telecomMetadata"
    assert record.retention_bucket_ym == 202711
    assert record.retention_until is None
    assert expiry_of(delivered(FoldPolicy())) is None


def test_settings_reach_the_fold_policy() -> None:
    settings = Settings(
        retention={"enabled": True, "tenantOverrideDays": {"opsLogs": 30}, "intervalMs": 500}
    )
    assert settings.fold_policy.retention.enabled
    assert settings.fold_policy.retention.tenant_override_days == {"opsLogs": 30}
    assert settings.fold_policy.retention.interval_ms == 500


# --- when a record goes -----------------------------------------------------------------------


def test_retention_applies_only_once_the_record_is_no_longer_polled() -> None:
    sent = created()
    assert sent.status == S.SENT and expiry_of(sent) is None
    assert expiry_of(delivered()) == (T0 + 365 * DAY, "retention")
    stopped, _ = fold(sent, stop_tracking_factory(), POLICY)
    assert stopped is not None and expiry_of(stopped) == (T0 + 365 * DAY, "retention")
    unknown = created(provider_message_id=None)  # UNKNOWN at once: not polled
    assert expiry_of(unknown) == (T0 + 365 * DAY, "retention")


def test_expires_at_applies_whatever_the_status_and_the_earlier_wins() -> None:
    soon = T0 + timedelta(hours=24)
    sent = created(expires_at=soon)
    assert expiry_of(sent) == (soon, "expired")
    assert expiry_of(delivered(expires_at=soon)) == (soon, "expired")
    late = T0 + 400 * DAY
    assert expiry_of(delivered(expires_at=late)) == (T0 + 365 * DAY, "retention")


def test_expiry_keys_sort_by_time_and_follow_the_record() -> None:
    sent = created()
    assert expiry_key_of(sent) is None
    done = delivered()
    assert expiry_key_of(done) == due_key(T0 + 365 * DAY, "msg-1")
    assert expiry_index_change(sent, done) == (None, due_key(T0 + 365 * DAY, "msg-1"))
    assert expiry_index_change(done, None) == (due_key(T0 + 365 * DAY, "msg-1"), None)
    assert expiry_index_change(done, done) == (None, None)
    keys = [due_key(T0 + timedelta(milliseconds=ms), "b") for ms in (5, 300, 70_000)]
    assert keys == sorted(keys)
    assert due_key(T0, "b") > due_key(T0 - timedelta(milliseconds=1), "zzz")


# --- the fold of expiries ---------------------------------------------------------------------


def test_an_expiry_past_the_deadline_deletes_the_record_and_says_so() -> None:
    record = delivered()
    event = expiry(record, issued_at=T0 + 366 * DAY)
    new, emitted = fold(record, event, POLICY)
    assert new is None
    assert emitted == (
        RecordDeleted(
            event_id=f"msg-1:deleted:{event.event_id}",
            message_id="msg-1",
            reason="retention",
            at=T0 + 366 * DAY,
            caused_by=event.event_id,
            status=S.DELIVERED,
        ),
    )
    assert not any(isinstance(out, StatusChanged) for out in emitted)


def test_stale_or_early_expiries_change_nothing() -> None:
    record = delivered()
    # The timer saw another expiry time (the record changed since): stale.
    stale = expiry(record, issued_at=T0 + 400 * DAY, at=T0 + 300 * DAY)
    assert fold(record, stale, POLICY) == (record, ())
    # Issued before the deadline (a timer whose clock is behind): not yet.
    early = expiry(record, issued_at=T0 + 364 * DAY)
    assert fold(record, early, POLICY) == (record, ())
    # A record still polled has no retention expiry at all.
    sent = created()
    retention = expiry(sent, issued_at=T0 + 400 * DAY, at=T0 + 365 * DAY)
    assert fold(sent, retention, POLICY) == (sent, ())
    # Nothing to expire.
    assert fold(None, retention, POLICY) == (None, ())


def test_an_expiry_moved_by_a_status_change_is_stale() -> None:
    """A record with expiresAt far away becomes DELIVERED: its expiry moves to the retention
    deadline, so an expiry event for the old expiresAt is stale."""
    far = T0 + 500 * DAY
    sent = created(expires_at=far)
    seen = expiry(sent, issued_at=far + DAY)
    done, _ = fold(sent, update_status_factory(S.DELIVERED), POLICY)
    assert done is not None
    assert fold(done, seen, POLICY) == (done, ())
    gone, emitted = fold(done, expiry(done, issued_at=far + DAY), POLICY)
    assert gone is None and isinstance(emitted[0], RecordDeleted)
    assert emitted[0].reason == "retention"


def test_expires_at_deletes_a_record_that_is_still_polled() -> None:
    soon = T0 + timedelta(hours=1)
    sent = created(expires_at=soon)
    new, emitted = fold(sent, expiry(sent, issued_at=soon), POLICY)
    assert new is None
    assert [(e.reason, e.status) for e in emitted if isinstance(e, RecordDeleted)] == [
        ("expired", S.SENT)
    ]


# --- purge ------------------------------------------------------------------------------------


def test_purge_deletes_at_once_whatever_the_status() -> None:
    for record in (created(), delivered()):
        new, emitted = fold(record, purge(), POLICY)
        assert new is None
        assert len(emitted) == 1 and isinstance(emitted[0], RecordDeleted)
        assert (emitted[0].reason, emitted[0].detail) == ("purge", "cleanup")
        assert emitted[0].event_id == "msg-1:deleted:purge-1"


def test_purge_of_an_unknown_message_is_rejected_like_any_command() -> None:
    new, emitted = fold(None, purge(), POLICY)
    assert new is None
    assert isinstance(emitted[0], EventRejected) and emitted[0].reason == "unknown-message"


def test_the_facade_purge_json_decodes() -> None:
    raw = (
        b'{"eventType": "purge", "messageId": "m-1", "eventId": "e-1", '
        b'"at": "2026-11-23T09:00:00Z", "reason": "cleanup", "schemaVersion": 1}'
    )
    event = decode_command(raw)
    assert isinstance(event, PurgeRecord) and event.reason == "cleanup"


def test_due_checks_topic_carries_both_timer_events() -> None:
    due = decode_due_check(
        b'{"eventId": "d", "messageId": "m", "dueAt": "2026-11-23T09:00:00Z",'
        b' "issuedAt": "2026-11-23T09:00:00Z"}'  # no eventType: a due check
    )
    assert isinstance(due, DueCheckIssued)
    expiry_event = decode_due_check(
        b'{"eventId": "x", "eventType": "RecordExpiryDue", "messageId": "m",'
        b' "expireAt": "2026-11-23T09:00:00Z", "issuedAt": "2026-11-23T09:00:00Z"}'
    )
    assert isinstance(expiry_event, RecordExpiryDue)


# --- deletion markers: deleted records stay deleted ------------------------------------------


def deleted_with_marker() -> tuple[TrackingRecord, DeletionMarker, RecordExpiryDue]:
    record = delivered()
    event = expiry(record, issued_at=T0 + 366 * DAY)
    new, marker, emitted = fold_marked(record, None, event, POLICY)
    assert new is None and marker is not None
    assert isinstance(emitted[0], RecordDeleted)
    return record, marker, event


def test_a_deletion_leaves_a_marker_that_drops_late_duplicates() -> None:
    record, marker, event = deleted_with_marker()
    assert marker.deleted_at == T0 + 366 * DAY
    assert marker.forget_at == marker.deleted_at + timedelta(days=7)
    assert (marker.reason, marker.event_id) == ("retention", event.event_id)
    # The same expiry again, the original send result again, a late command or purge:
    original_send = send_recorded_factory(event_id=record.status_history[0].event_id)
    for late in (event, original_send, update_status_factory(S.FAILED), purge()):
        assert fold_marked(None, marker, late, POLICY) == (None, marker, ())


def test_a_send_requested_after_the_deletion_starts_a_new_record() -> None:
    _, marker, _ = deleted_with_marker()
    new_send = send_recorded_factory(requested_at=marker.deleted_at + timedelta(seconds=1))
    new, new_marker, emitted = fold_marked(None, marker, new_send, POLICY)
    assert new is not None and new.sequence == 1 and new_marker is None
    assert any(isinstance(out, StatusChanged) for out in emitted)


def test_the_marker_is_forgotten_by_its_own_expiry_only() -> None:
    _, marker, _ = deleted_with_marker()

    def forget(at: datetime, issued: datetime) -> RecordExpiryDue:
        return RecordExpiryDue(
            event_id=f"expire:msg-1:{epoch_ms(at)}",
            message_id="msg-1",
            expire_at=at,
            issued_at=issued,
        )

    later = marker.forget_at + DAY
    assert fold_marked(None, marker, forget(marker.deleted_at, later), POLICY)[1] == marker
    assert fold_marked(None, marker, forget(marker.forget_at, marker.deleted_at), POLICY)[1] == (
        marker
    )
    assert fold_marked(None, marker, forget(marker.forget_at, later), POLICY) == (None, None, ())


def test_no_marker_when_markers_are_off_and_none_without_a_deletion() -> None:
    off = FoldPolicy(retention=RetentionPolicy(enabled=True, deleted_marker_ms=0))
    record = delivered(off)
    new, marker, emitted = fold_marked(record, None, purge(), off)
    assert new is None and marker is None and isinstance(emitted[0], RecordDeleted)
    # A new record or an ordinary change never makes a marker.
    assert fold_marked(None, None, send_recorded_factory(), POLICY)[1] is None
    assert fold_marked(record, None, update_status_factory(S.CLICKED), POLICY)[1] is None


def test_expiry_event_ids_are_deterministic_and_from_epoch_ms_round_trips() -> None:
    at = T0 + timedelta(milliseconds=123)
    assert from_epoch_ms(epoch_ms(at)) == at


# --- properties: deterministic, idempotent, and deleted stays deleted ------------------------

IDS = ["a", "b"]
offsets = st.integers(min_value=0, max_value=10).map(lambda d: T0 + d * DAY)


@st.composite
def events(draw: st.DrawFn) -> MessageEvent:
    kind = draw(st.sampled_from(["send", "update", "expire", "purge"]))
    message_id = draw(st.sampled_from(IDS))
    event_id = f"{kind}-{draw(st.integers(min_value=0, max_value=5))}"
    at = draw(offsets)
    if kind == "send":
        return SendRecorded(
            event_id=event_id,
            message_id=message_id,
            provider_id="p",
            provider_message_id="pm",
            type="SMS",
            to="010",
            requested_at=at,
            expires_at=draw(st.none() | offsets),
            retention_class=draw(st.sampled_from(["opsLogs", "telecomMetadata"])),
        )
    if kind == "update":
        status = draw(st.sampled_from([S.SENT, S.DELIVERED, S.FAILED]))
        return UpdateStatus(event_id=event_id, message_id=message_id, status=status, at=at)
    if kind == "purge":
        return PurgeRecord(event_id=event_id, message_id=message_id, at=at)
    return RecordExpiryDue(
        event_id=f"expire:{message_id}:{epoch_ms(at)}",
        message_id=message_id,
        expire_at=at,
        issued_at=at + draw(st.sampled_from([timedelta(0), DAY])),
    )


SHORT = FoldPolicy(
    retention=RetentionPolicy(
        enabled=True,
        tenant_override_days={"opsLogs": 2, "telecomMetadata": 3},
        deleted_marker_ms=4 * 86_400_000,
    )
)
Table = dict[str, tuple[TrackingRecord | None, DeletionMarker | None]]


def run(stream: list[MessageEvent]) -> tuple[Table, list[Any]]:
    table: Table = {}
    out: list[Any] = []
    for event in stream:
        record, marker = table.get(event.message_id, (None, None))
        record, marker, emitted = fold_marked(record, marker, event, SHORT)
        assert record is None or marker is None  # never both
        table[event.message_id] = (record, marker)
        out.extend(emitted)
    return table, out


@settings(max_examples=300)
@given(st.lists(events(), max_size=30))
def test_folding_with_deletions_is_deterministic(stream: list[MessageEvent]) -> None:
    assert run(stream) == run(stream)


@settings(max_examples=300)
@given(st.lists(events(), max_size=30))
def test_repeating_any_event_right_away_changes_nothing(stream: list[MessageEvent]) -> None:
    doubled = [event for event in stream for event in (event, event)]
    assert run(doubled)[0] == run(stream)[0]


@settings(max_examples=300)
@given(st.lists(events(), max_size=30))
def test_a_marked_deletion_is_only_undone_by_a_newer_send(stream: list[MessageEvent]) -> None:
    table: Table = {}
    for event in stream:
        record, marker = table.get(event.message_id, (None, None))
        new, new_marker, _ = fold_marked(record, marker, event, SHORT)
        if marker is not None and new is not None:
            assert isinstance(event, SendRecorded) and event.requested_at > marker.deleted_at
        table[event.message_id] = (new, new_marker)
