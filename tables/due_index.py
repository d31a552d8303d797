"""Due-index keys: big-endian due time in epoch milliseconds, then the messageId.

Keys sort by due time, so a scan from the first key up to ``upper_bound(now)`` touches only the
records that are due: O(records due), not O(records tracked). Pure functions, no I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from deliverytrack.models.enums import is_pollable
from deliverytrack.tables.facts import RecordFacts

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_WIDTH = 8


def epoch_ms(moment: datetime) -> int:
    """Exact integer milliseconds since the epoch (no float rounding)."""
    return (moment - _EPOCH) // _MS


def from_epoch_ms(ms: int) -> datetime:
    return _EPOCH + ms * _MS


def due_key(due_at: datetime, message_id: str) -> bytes:
    return epoch_ms(due_at).to_bytes(_WIDTH, "big") + message_id.encode()


def parse_due_key(key: bytes) -> tuple[int, str]:
    return int.from_bytes(key[:_WIDTH], "big"), key[_WIDTH:].decode()


def upper_bound(now: datetime) -> bytes:
    """Exclusive upper bound: every key due at or before ``now`` sorts below it."""
    return (epoch_ms(now) + 1).to_bytes(_WIDTH, "big")


def effective_due(record: RecordFacts) -> datetime | None:
    """When the timer should next look at the record: the lease expiry while a poll is in
    flight (so a lost poll is retried), else ``nextCheckAt``; never for unpolled records."""
    if not is_pollable(record.status) or record.tracking_stopped_at is not None:
        return None
    return record.check_lease_until or record.next_check_at


def due_key_of(record: RecordFacts | None) -> bytes | None:
    if record is None:
        return None
    due = effective_due(record)
    return None if due is None else due_key(due, record.message_id)


def due_index_change(
    old: RecordFacts | None, new: RecordFacts | None
) -> tuple[bytes | None, bytes | None]:
    """What to delete from and put into the due index when ``old`` becomes ``new``."""
    old_key, new_key = due_key_of(old), due_key_of(new)
    if old_key == new_key:
        return None, None
    return old_key, new_key
