"""The fold with deletion markers: what keeps a deleted record deleted.

Once a record is deleted, its ``processedEventIds`` (the duplicate guard) and the structural
guards (first send result wins, monotonic status) are gone with it. Re-reads after a crash are
not the danger: the deletion is written to RocksDB atomically with the source offsets it
reflects, and the changelog carries the tombstone before the position record, so a restarted
worker re-reads only events that were not part of the state yet and folds them exactly as the
first time. (If it crashed after the changelog write and before the RocksDB write, it restores
the tombstone and the marker, and the re-read events of that batch meet the marker and are
dropped; see README "Retention and cleanup".) The danger is a *late duplicate* of an old
event, e.g. a sending app that publishes a send result again after the record was purged:
without a guard it would bring the record back and start polling it again.

So a deletion leaves a small ``DeletionMarker`` for ``deletedMarkerMs``. While it exists, every
event for that messageId is dropped silently, except a send result requested after the
deletion (a new message reusing the id), which starts a new record. The marker is state like a
record (in RocksDB and on the changelog), and it is forgotten through the same expiry timer
(a ``RecordExpiryDue`` for its ``forgetAt``), so live folding, restore and replay agree.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from deliverytrack.models.codec import Marker
from deliverytrack.models.common import utc_text
from deliverytrack.models.correlation import CommandHold, HeldCommand, SourceRef
from deliverytrack.models.events import (
    CancelMessage,
    DeadLetter,
    EventRejected,
    MessageEvent,
    PurgeRecord,
    RecordDeleted,
    RecordExpiryDue,
    RecordFailoverOutcome,
    SendRecorded,
    StopTracking,
    UpdateStatus,
)
from deliverytrack.models.policy import DEFAULT_POLICY, FoldPolicy
from deliverytrack.models.records import TrackingRecord
from deliverytrack.models.retention import DeletionMarker
from deliverytrack.tables.correlation import held_dead_letter
from deliverytrack.tables.due_index import epoch_ms
from deliverytrack.tables.fold import Emitted, fold

MarkedResult = tuple[TrackingRecord | None, Marker | None, tuple[Emitted | DeadLetter, ...]]
COMMANDS = (UpdateStatus, CancelMessage, StopTracking, RecordFailoverOutcome, PurgeRecord)
MAX_HELD_COMMANDS = 100
"""Commands held per messageId at most; more are dead-lettered at once (hold-full)."""


def fold_marked(
    record: TrackingRecord | None,
    marker: Marker | None,
    event: MessageEvent,
    policy: FoldPolicy = DEFAULT_POLICY,
    *,
    source: Callable[[], SourceRef] | None = None,
) -> MarkedResult:
    """``fold`` for a messageId that has a record, a marker (a deletion marker or held
    commands), or neither (never both). Returns the new record, the new marker and what the
    fold emitted. ``source`` gives the input's coordinates and bytes, kept with a held command
    for its dead letter (without it, commands for unknown messages are refused at once)."""
    if record is None and isinstance(marker, CommandHold):
        return _with_held(marker, event, policy, source)
    if (
        record is None
        and marker is None
        and isinstance(event, COMMANDS)
        and source is not None
        and policy.command_hold_ms > 0
    ):
        held = HeldCommand(command=event, source=source())
        forget_at = event.at + timedelta(milliseconds=policy.command_hold_ms)
        return (
            None,
            CommandHold(message_id=event.message_id, forget_at=forget_at, commands=(held,)),
            (),
        )
    if record is None and isinstance(marker, DeletionMarker):
        if isinstance(event, SendRecorded) and event.requested_at > marker.deleted_at:
            new, emitted = fold(None, event, policy)
            return new, None, emitted
        if (
            isinstance(event, RecordExpiryDue)
            and epoch_ms(event.expire_at) == epoch_ms(marker.forget_at)
            and event.issued_at >= marker.forget_at
        ):
            return None, None, ()
        return None, marker, ()
    new, emitted = fold(record, event, policy)
    if record is None or new is not None:
        return new, None, emitted
    deleted = next((out for out in emitted if isinstance(out, RecordDeleted)), None)
    ttl = policy.retention.deleted_marker_ms
    if deleted is None or ttl <= 0:
        return None, None, emitted
    marker = DeletionMarker(
        message_id=record.message_id,
        deleted_at=deleted.at,
        forget_at=deleted.at + timedelta(milliseconds=ttl),
        reason=deleted.reason,
        event_id=event.event_id,
    )
    return None, marker, emitted


def _with_held(
    hold: CommandHold,
    event: MessageEvent,
    policy: FoldPolicy,
    source: Callable[[], SourceRef] | None,
) -> MarkedResult:
    """A messageId with held commands: the send result applies them in their order; more
    commands join them; the expiry timer dead-letters them once ``forgetAt`` has passed."""
    if isinstance(event, SendRecorded):
        new, emitted = fold(None, event, policy)
        if new is None:
            return None, hold, emitted
        out: list[Emitted | DeadLetter] = list(emitted)
        current: TrackingRecord | None = new
        mark: Marker | None = None
        for held in hold.commands:
            current, mark, more = fold_marked(current, mark, held.command, policy)
            out.extend(
                _letter(held, item.reason, item.detail, event.requested_at)
                if isinstance(item, EventRejected)
                else item
                for item in more
            )
        return current, mark, tuple(out)
    if isinstance(event, COMMANDS):
        if any(held.command.event_id == event.event_id for held in hold.commands):
            return None, hold, ()  # a duplicate
        if len(hold.commands) >= MAX_HELD_COMMANDS or source is None:
            rejected = EventRejected(
                event_id=event.event_id,
                message_id=event.message_id,
                reason="hold-full",
                detail=f"{MAX_HELD_COMMANDS} commands already wait for the send result of "
                f"messageId {event.message_id!r}",
            )
            return None, hold, (rejected,)
        held = HeldCommand(command=event, source=source())
        return None, hold.model_copy(update={"commands": (*hold.commands, held)}), ()
    if (
        isinstance(event, RecordExpiryDue)
        and epoch_ms(event.expire_at) == epoch_ms(hold.forget_at)
        and event.issued_at >= hold.forget_at
    ):
        detail = (
            f"no tracking record for messageId {hold.message_id!r}: no send result arrived "
            f"within {policy.command_hold_ms} ms (held until {utc_text(hold.forget_at)})"
        )
        letters = tuple(
            _letter(h, "unknown-message", detail, event.issued_at) for h in hold.commands
        )
        return None, None, letters
    return None, hold, ()


def _letter(held: HeldCommand, reason: str, detail: str, at: datetime) -> DeadLetter:
    return held_dead_letter(held.source, held.command.message_id.encode(), reason, detail, at)
