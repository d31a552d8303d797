"""Retention and expiry, pure: labels, deletion deadlines, the expiry index, and the fold of
``RecordExpiryDue`` and ``PurgeRecord``.

A record is deleted (the fold returns ``None``: a RocksDB delete and a changelog tombstone)

- by **retention**: ``retentionUntil`` = requestedAt + the class's retention days (the same
  moment k-msg's ``retentionBucketYm`` is the month of), once the record is no longer polled
  (DELIVERED, CLICKED, FAILED, CANCELLED, UNKNOWN, or tracking stopped). A record still being
  polled is never deleted by retention;
- by **expiry**: ``expiresAt`` from the send result (k-msg's old tracker: createdAt +
  maxTrackingDuration), whatever the status;
- by a **purge** command, at once.

Expiry keys have the due index's layout (big-endian ms + messageId), so the timer's scan costs
O(records expired), not O(records kept).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from deliverytrack.models.codec import Marker
from deliverytrack.models.enums import is_pollable
from deliverytrack.models.events import (
    EventRejected,
    PurgeRecord,
    RecordDeleted,
    RecordExpiryDue,
    SendRecorded,
)
from deliverytrack.models.records import RetentionClass, TrackingRecord
from deliverytrack.models.retention import PRESET_DAYS, DeletionReason, RetentionPolicy
from deliverytrack.tables.due_index import due_key, epoch_ms
from deliverytrack.tables.facts import RecordFacts

DeleteResult = tuple[TrackingRecord | None, tuple[RecordDeleted | EventRejected, ...]]


# --- labels (k-msg resolveRetentionDays / toRetentionBucketYm) ---------------------------------


def resolve_retention_days(policy: RetentionPolicy, retention_class: RetentionClass) -> float:
    """The preset's days for the class, replaced by ``tenantOverrideDays[class]`` when > 0."""
    days = PRESET_DAYS[policy.preset][retention_class]
    override = policy.tenant_override_days.get(retention_class)
    if override is not None and override > 0:
        days = override
    return days


def to_retention_bucket_ym(moment: datetime) -> int:
    """UTC year * 100 + UTC month, e.g. 202701."""
    utc = moment.astimezone(UTC)
    return utc.year * 100 + utc.month


def retention_labels(event: SendRecorded, policy: RetentionPolicy) -> dict[str, Any]:
    """The retention fields of a new record: class, bucket, deadline (fixed at creation)."""
    retention_class: RetentionClass = event.retention_class or policy.default_class
    until = event.requested_at + timedelta(days=resolve_retention_days(policy, retention_class))
    return {
        "retention_class": retention_class,
        "retention_bucket_ym": to_retention_bucket_ym(until),
        "retention_until": until if policy.enabled else None,
        "expires_at": event.expires_at,
    }


# --- when a record goes ------------------------------------------------------------------------


def at_rest(record: RecordFacts) -> bool:
    """No longer polled: retention may delete it."""
    return not is_pollable(record.status) or record.tracking_stopped_at is not None


def expiry_of(record: RecordFacts) -> tuple[datetime, DeletionReason] | None:
    """When and why the record is to be deleted, if ever: the earlier of ``expiresAt`` and
    (once at rest) ``retentionUntil``."""
    candidates: list[tuple[datetime, DeletionReason]] = []
    if record.expires_at is not None:
        candidates.append((record.expires_at, "expired"))
    if record.retention_until is not None and at_rest(record):
        candidates.append((record.retention_until, "retention"))
    return min(candidates) if candidates else None


def expiry_key_of(record: RecordFacts | None) -> bytes | None:
    expiry = None if record is None else expiry_of(record)
    return None if record is None or expiry is None else due_key(expiry[0], record.message_id)


def marker_key_of(marker: Marker | None) -> bytes | None:
    return None if marker is None else due_key(marker.forget_at, marker.message_id)


def expiry_index_change(
    old: RecordFacts | None, new: RecordFacts | None
) -> tuple[bytes | None, bytes | None]:
    """What to delete from and put into the expiry index when ``old`` becomes ``new``."""
    old_key, new_key = expiry_key_of(old), expiry_key_of(new)
    return (None, None) if old_key == new_key else (old_key, new_key)


def marker_index_change(
    old: Marker | None, new: Marker | None
) -> tuple[bytes | None, bytes | None]:
    old_key, new_key = marker_key_of(old), marker_key_of(new)
    return (None, None) if old_key == new_key else (old_key, new_key)


# --- the fold of expiries and purges -----------------------------------------------------------


def expire(record: TrackingRecord | None, event: RecordExpiryDue) -> DeleteResult:
    """Delete the record if the expiry the timer saw is still its expiry and has passed.
    A stale expiry (the record changed so its expiry moved, or it is gone) changes nothing."""
    if record is None:
        return None, ()
    expiry = expiry_of(record)
    if expiry is None or epoch_ms(expiry[0]) != epoch_ms(event.expire_at):
        return record, ()
    if event.issued_at < expiry[0]:
        return record, ()
    return None, (_deleted(record, expiry[1], event.issued_at, event.event_id),)


def purge(record: TrackingRecord | None, event: PurgeRecord) -> DeleteResult:
    if record is None:
        return None, (
            EventRejected(
                event_id=event.event_id,
                message_id=event.message_id,
                reason="unknown-message",
                detail=f"no tracking record for messageId {event.message_id!r}",
            ),
        )
    return None, (_deleted(record, "purge", event.at, event.event_id, event.reason),)


def _deleted(
    record: TrackingRecord,
    reason: DeletionReason,
    at: datetime,
    caused_by: str,
    detail: str | None = None,
) -> RecordDeleted:
    return RecordDeleted(
        event_id=f"{record.message_id}:deleted:{caused_by}",
        message_id=record.message_id,
        reason=reason,
        at=at,
        caused_by=caused_by,
        status=record.status,
        detail=detail,
    )
