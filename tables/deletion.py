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

from datetime import timedelta

from deliverytrack.models.events import MessageEvent, RecordDeleted, RecordExpiryDue, SendRecorded
from deliverytrack.models.policy import DEFAULT_POLICY, PollingPolicy
from deliverytrack.models.records import TrackingRecord
from deliverytrack.models.retention import DeletionMarker
from deliverytrack.tables.due_index import epoch_ms
from deliverytrack.tables.fold import Emitted, fold

MarkedResult = tuple[TrackingRecord | None, DeletionMarker | None, tuple[Emitted, ...]]


def fold_marked(
    record: TrackingRecord | None,
    marker: DeletionMarker | None,
    event: MessageEvent,
    policy: PollingPolicy = DEFAULT_POLICY,
) -> MarkedResult:
    """``fold`` for a messageId that has a record, a deletion marker, or neither (never both).
    Returns the new record, the new marker and what the fold emitted."""
    if record is None and marker is not None:
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
