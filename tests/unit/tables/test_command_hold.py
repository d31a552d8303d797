"""Commands that arrive before their send result are held (tables/deletion.py), not lost:
applied in order when the send result arrives, dead-lettered with their own bytes when the
hold expires."""

from __future__ import annotations

import base64
from datetime import timedelta

from deliverytrack.models.codec import decode_marker, encode
from deliverytrack.models.correlation import CommandHold, SourceRef
from deliverytrack.models.enums import TrackingStatus
from deliverytrack.models.events import (
    DeadLetter,
    EventRejected,
    MessageEvent,
    PurgeRecord,
    RecordDeleted,
    RecordExpiryDue,
    StatusChanged,
)
from deliverytrack.models.policy import FoldPolicy
from deliverytrack.models.retention import DeletionMarker
from deliverytrack.tables.deletion import MAX_HELD_COMMANDS, MarkedResult, fold_marked
from tests.factories import T0, cancel_factory, send_recorded_factory, update_status_factory

S = TrackingStatus
POLICY = FoldPolicy(command_hold_ms=60_000)


def source_of(event: MessageEvent, offset: int = 7) -> SourceRef:
    return SourceRef(
        topic="deliverytrack.commands",
        partition=1,
        offset=offset,
        value_base64=base64.b64encode(encode(event)).decode(),
    )


def step(record: object, marker: object, event: MessageEvent, offset: int = 7) -> MarkedResult:
    return fold_marked(
        record,  # type: ignore[arg-type]
        marker,  # type: ignore[arg-type]
        event,
        POLICY,
        source=lambda: source_of(event, offset),
    )


def test_a_command_for_an_unknown_message_is_held_until_its_send_result() -> None:
    delivered = update_status_factory(S.DELIVERED, "m-1", event_id="dlv")
    record, hold, emitted = step(None, None, delivered)
    assert record is None and emitted == ()
    assert isinstance(hold, CommandHold)
    assert hold.forget_at == delivered.at + timedelta(minutes=1)
    assert decode_marker(encode(hold)) == hold  # what the engine writes, it reads back
    clicked = update_status_factory(S.CLICKED, "m-1", event_id="clk")
    _, hold, emitted = step(None, hold, clicked, offset=8)
    _, hold, _ = step(None, hold, delivered, offset=9)  # a duplicate joins nothing
    assert isinstance(hold, CommandHold)
    assert [h.command.event_id for h in hold.commands] == ["dlv", "clk"]

    record, marker, emitted = step(None, hold, send_recorded_factory("m-1"))
    assert marker is None
    assert record is not None and record.status == S.CLICKED
    changes = [out for out in emitted if isinstance(out, StatusChanged)]
    assert [(c.previous_status, c.status) for c in changes] == [
        (None, S.SENT),
        (S.SENT, S.DELIVERED),
        (S.DELIVERED, S.CLICKED),
    ]
    assert [c.caused_by for c in changes[1:]] == ["dlv", "clk"]


def test_held_commands_expire_to_dead_letters_with_their_own_bytes() -> None:
    cancel = cancel_factory("m-2", event_id="c-1")
    _, hold, _ = step(None, None, cancel, offset=41)
    assert isinstance(hold, CommandHold)
    stale = RecordExpiryDue(
        event_id="expire:m-2:1",
        message_id="m-2",
        expire_at=hold.forget_at - timedelta(seconds=1),
        issued_at=hold.forget_at + timedelta(hours=1),
    )
    assert step(None, hold, stale) == (None, hold, ())
    early = stale.model_copy(update={"expire_at": hold.forget_at, "issued_at": T0})
    assert step(None, hold, early) == (None, hold, ())
    due = stale.model_copy(update={"expire_at": hold.forget_at})
    record, marker, emitted = step(None, hold, due)
    assert record is None and marker is None
    (letter,) = emitted
    assert isinstance(letter, DeadLetter)
    assert letter.reason == "unknown-message" and "60000 ms" in letter.error
    assert (letter.topic, letter.partition, letter.offset) == ("deliverytrack.commands", 1, 41)
    assert base64.b64decode(letter.value_base64 or "") == encode(cancel)
    assert letter.value_text == encode(cancel).decode()
    assert base64.b64decode(letter.key_base64 or "") == b"m-2"


def test_a_held_purge_deletes_the_record_its_send_result_creates() -> None:
    purge = PurgeRecord(event_id="p-1", message_id="m-3", at=T0, reason="cleanup")
    _, hold, _ = step(None, None, purge)
    record, marker, emitted = step(None, hold, send_recorded_factory("m-3"))
    assert record is None
    assert isinstance(marker, DeletionMarker) and marker.event_id == "p-1"
    assert any(isinstance(out, RecordDeleted) for out in emitted)


def test_the_hold_is_bounded() -> None:
    hold = None
    for n in range(MAX_HELD_COMMANDS):
        _, hold, _ = step(None, hold, update_status_factory(S.SENT, "m-5", event_id=f"u-{n}"))
    assert isinstance(hold, CommandHold) and len(hold.commands) == MAX_HELD_COMMANDS
    extra = update_status_factory(S.SENT, "m-5", event_id="one-too-many")
    _, same, emitted = step(None, hold, extra)
    assert same is hold
    (rejected,) = emitted
    assert isinstance(rejected, EventRejected) and rejected.reason == "hold-full"


def test_without_a_hold_time_or_a_source_a_command_for_no_record_is_refused_at_once() -> None:
    command = update_status_factory(S.DELIVERED, "m-6")
    no_hold = FoldPolicy(command_hold_ms=0)
    for result in (
        fold_marked(None, None, command, no_hold, source=lambda: source_of(command)),
        fold_marked(None, None, command, POLICY),
    ):
        record, marker, emitted = result
        assert record is None and marker is None
        (rejected,) = emitted
        assert isinstance(rejected, EventRejected) and rejected.reason == "unknown-message"


def test_a_deleted_record_drops_commands_instead_of_holding_them() -> None:
    marker = DeletionMarker(
        message_id="m-7",
        deleted_at=T0,
        forget_at=T0 + timedelta(days=7),
        reason="purge",
        event_id="p",
    )
    command = update_status_factory(S.DELIVERED, "m-7")
    assert step(None, marker, command) == (None, marker, ())
