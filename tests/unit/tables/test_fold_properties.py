"""Property-based tests (hypothesis): monotonic status, idempotency, determinism."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from deliverytrack.models.codec import decode_record, encode, encode_record, encode_status_changed
from deliverytrack.models.enums import FINAL_STATUSES, FORWARD_RANK, TrackingStatus
from deliverytrack.models.events import (
    CancelMessage,
    DueCheckIssued,
    MessageEvent,
    PollRequested,
    SendRecorded,
    StatusChanged,
    StatusObserved,
    StopTracking,
    UpdateStatus,
)
from deliverytrack.models.records import TrackingRecord
from deliverytrack.tables.fold import fold, replay
from tests.factories import T0

MESSAGE_IDS = ["m-a", "m-b"]
statuses = st.sampled_from(list(TrackingStatus))
# Coarse times so that due checks often hit a record's due time exactly.
offsets = st.integers(min_value=0, max_value=40).map(lambda i: T0 + timedelta(seconds=30 * i))
event_ids = st.integers(min_value=0, max_value=30).map(lambda i: f"e-{i}")


@st.composite
def message_events(draw: st.DrawFn) -> MessageEvent:
    kind = draw(
        st.sampled_from(
            ["send", "update", "update", "update", "cancel", "stop", "due", "due", "obs", "obs"]
        )
    )
    message_id = draw(st.sampled_from(MESSAGE_IDS))
    event_id = draw(event_ids)
    at = draw(offsets)
    if kind == "send":
        return SendRecorded(
            event_id=event_id,
            message_id=message_id,
            provider_id="p",
            provider_message_id=draw(st.sampled_from(["pm", "", None])),
            type="SMS",
            to="010",
            requested_at=at,
            scheduled_at=draw(st.none() | offsets),
        )
    if kind == "update":
        return UpdateStatus(event_id=event_id, message_id=message_id, status=draw(statuses), at=at)
    if kind == "due":
        return DueCheckIssued(
            event_id=event_id, message_id=message_id, due_at=draw(offsets), issued_at=at
        )
    if kind == "obs":
        outcome = draw(
            st.sampled_from(["result", "not_yet", "error", "provider_not_found", "unsupported"])
        )
        return StatusObserved(
            event_id=event_id,
            message_id=message_id,
            check_seq=draw(st.integers(min_value=1, max_value=3)),
            provider_id="p",
            outcome=outcome,
            observed_at=at,
            result={"status": draw(statuses), "statusCode": "c"} if outcome == "result" else None,
            error={"code": "E", "retryable": draw(st.booleans())} if outcome == "error" else None,
        )
    if kind == "cancel":
        return CancelMessage(event_id=event_id, message_id=message_id, at=at)
    return StopTracking(event_id=event_id, message_id=message_id, at=at)


def fold_all(events: list[MessageEvent]) -> dict[str, TrackingRecord | None]:
    table: dict[str, TrackingRecord | None] = {}
    for event in events:
        table[event.message_id], _ = fold(table.get(event.message_id), event)
    return table


def is_regression(old: TrackingStatus, new: TrackingStatus) -> bool:
    if old in FINAL_STATUSES:
        return True  # nothing may follow a final status
    if old == TrackingStatus.DELIVERED:
        return new != TrackingStatus.CLICKED
    if old == TrackingStatus.UNKNOWN:
        return new not in (TrackingStatus.DELIVERED, TrackingStatus.FAILED)
    if new in FORWARD_RANK:
        return FORWARD_RANK[new] <= FORWARD_RANK[old]
    return False


@settings(max_examples=300)
@given(st.lists(message_events(), max_size=40))
def test_status_never_regresses(events: list[MessageEvent]) -> None:
    table: dict[str, TrackingRecord | None] = {}
    for event in events:
        old = table.get(event.message_id)
        new, emitted = fold(old, event)
        table[event.message_id] = new
        changes = [e for e in emitted if isinstance(e, StatusChanged)]
        if old is not None and new is not None and new.status != old.status:
            assert not is_regression(old.status, new.status), (old.status, new.status)
            assert len(changes) == 1
            assert changes[0].previous_status == old.status
        if old is not None and new is not None and new.status == old.status:
            assert changes == []
        polls = [e for e in emitted if isinstance(e, PollRequested)]
        if polls:
            assert isinstance(event, DueCheckIssued) and new is not None
            assert new.check_lease_until is not None
        if new is not None:
            # History and sequence agree with what was published.
            assert new.sequence == len(new.status_history)
            assert new.status_history[-1].status == new.status


@settings(max_examples=300)
@given(st.lists(message_events(), max_size=40), st.data())
def test_duplicate_event_is_a_no_op(events: list[MessageEvent], data: st.DataObject) -> None:
    table = fold_all(events)
    applied = [
        event
        for event in events
        if (record := table.get(event.message_id)) is not None
        and event.event_id in record.processed_event_ids
    ]
    if not applied:
        return
    duplicate = data.draw(st.sampled_from(applied))
    record = table[duplicate.message_id]
    again, emitted = fold(record, duplicate)
    assert again is record
    assert emitted == ()


@settings(max_examples=200)
@given(st.lists(message_events(), max_size=40))
def test_folding_twice_from_empty_is_identical(events: list[MessageEvent]) -> None:
    first = fold_all(events)
    second = fold_all(events)
    assert first == second
    for message_id in MESSAGE_IDS:
        own = [e for e in events if e.message_id == message_id]
        one, out_one = replay(own)
        two, out_two = replay(own)
        assert one == two and out_one == out_two


@settings(max_examples=200)
@given(st.lists(message_events(), max_size=30))
def test_fold_never_changes_its_input(events: list[MessageEvent]) -> None:
    """Invariant 1: the fold returns new records; the one it was given is left as it was."""
    table: dict[str, TrackingRecord | None] = {}
    for event in events:
        old = table.get(event.message_id)
        snapshot = None if old is None else old.model_dump()
        new, _ = fold(old, event)
        assert (None if old is None else old.model_dump()) == snapshot
        if new is not None and old is not None and new is not old:
            assert new.model_dump() != snapshot
        table[event.message_id] = new


@settings(max_examples=200)
@given(st.lists(message_events(), max_size=40))
def test_what_the_fold_builds_is_what_decoding_builds(events: list[MessageEvent]) -> None:
    """The fold builds records and events without validating them again (``trusted``), and the
    engine keeps the records it built in memory instead of decoding them back from RocksDB:
    both are right only if decoding what the fold built gives the very same objects."""
    table: dict[str, TrackingRecord | None] = {}
    for event in events:
        new, emitted = fold(table.get(event.message_id), event)
        table[event.message_id] = new
        if new is not None:
            raw = encode_record(new)
            assert decode_record(raw) == new
            assert encode_record(decode_record(raw)) == raw
        for out in emitted:
            if isinstance(out, StatusChanged):  # previousStatus is required, null included
                assert StatusChanged.model_validate_json(encode_status_changed(out)) == out
            else:
                assert type(out).model_validate_json(encode(out)) == out
