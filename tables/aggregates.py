"""Aggregates and secondary indexes the fold keeps beside the records. Pure: no I/O, no clock.

Counts, count-by and delivery stats are answered from counters, not by iterating records. A
record contributes one counter row per granularity, keyed by its dimensions
``(providerId, type, status)``:

- ``T``: all time (one row per dimension combination);
- ``D``, ``H``, ``M``: the UTC day, hour and minute of ``requestedAt`` (k-msg's stats period is
  by creation time), so a ``requestedAt`` range is answered from whole days in the middle, whole
  hours and minutes at the edges, and only the records of the two partial minutes at the very
  ends are read (through the ``requestedAt`` index).

Each row holds ``(count, sum of deliveredAt - sentAt in ms, number of records having both)``:
enough for k-msg DeliveryTracker's totals, by-status, by-provider, average delivery time and
rates. When a record changes from ``old`` to ``new`` (the storage layer calls
:func:`aggregate_delta` with the record before and after a batch), the old contribution is
subtracted and the new one added, in the same RocksDB WriteBatch as the record, so counters are
exactly as correct as the records they count, through restarts, changelog restores and deletes.

Secondary index keys (``requestedAt`` and ``statusUpdatedAt``, big-endian ms + messageId) let a
list ordered by either field, or bounded by a range on it, walk in order and stop early.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from deliverytrack.tables.due_index import epoch_ms
from deliverytrack.tables.facts import RecordFacts

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

TOTAL = b"T"
DAY = b"D"
HOUR = b"H"
MINUTE = b"M"
GRANULARITIES: tuple[tuple[bytes, int], ...] = ((DAY, DAY_MS), (HOUR, HOUR_MS), (MINUTE, MINUTE_MS))

_SEP = b"\x1f"
_COUNTER = struct.Struct(">qqq")
_WIDTH = 8

Dims = tuple[str, str, str]
"""(providerId, type, status)"""


@dataclass(slots=True)
class Counter:
    """One aggregate row: records, and the delivery-time sum over those having both times."""

    count: int = 0
    delivery_ms_sum: int = 0
    delivery_count: int = 0

    def add(self, other: Counter, sign: int = 1) -> None:
        self.count += sign * other.count
        self.delivery_ms_sum += sign * other.delivery_ms_sum
        self.delivery_count += sign * other.delivery_count

    def is_zero(self) -> bool:
        return self.count == 0 and self.delivery_ms_sum == 0 and self.delivery_count == 0

    def pack(self) -> bytes:
        return _COUNTER.pack(self.count, self.delivery_ms_sum, self.delivery_count)

    @classmethod
    def unpack(cls, raw: bytes) -> Counter:
        return cls(*_COUNTER.unpack(raw))


@dataclass(slots=True)
class Contribution:
    dims: Dims
    requested_ms: int
    counter: Counter = field(default_factory=Counter)


def contribution(record: RecordFacts) -> Contribution:
    counter = Counter(count=1)
    if record.sent_at is not None and record.delivered_at is not None:
        counter.delivery_ms_sum = epoch_ms(record.delivered_at) - epoch_ms(record.sent_at)
        counter.delivery_count = 1
    dims = (record.provider_id, record.type.value, record.status.value)
    return Contribution(dims, epoch_ms(record.requested_at), counter)


def _counted_alike(old: RecordFacts, new: RecordFacts) -> bool:
    """Whether both contribute the same rows and counters (what :func:`contribution` reads)."""
    return (
        old.status is new.status
        and old.requested_at == new.requested_at
        and old.sent_at == new.sent_at
        and old.delivered_at == new.delivered_at
        and old.provider_id == new.provider_id
        and old.type is new.type
    )


def encode_dims(dims: Dims) -> bytes:
    return _SEP.join(part.encode() for part in dims)


def decode_dims(raw: bytes) -> Dims:
    # From the right: type and status are enum values; a providerId may contain anything.
    provider_id, type_, status = raw.rsplit(_SEP, 2)
    return provider_id.decode(), type_.decode(), status.decode()


def bucket_prefix(granularity: bytes, bucket_ms: int = 0) -> bytes:
    """Key prefix of every row of one bucket (``TOTAL`` has a single bucket, 0)."""
    return granularity + bucket_ms.to_bytes(_WIDTH, "big", signed=False)


def row_key(granularity: bytes, bucket_ms: int, dims: Dims) -> bytes:
    return bucket_prefix(granularity, bucket_ms) + encode_dims(dims)


def parse_row_key(key: bytes) -> tuple[bytes, int, Dims]:
    """Inverse of :func:`row_key`."""
    return (
        key[:1],
        int.from_bytes(key[1 : 1 + _WIDTH], "big"),
        decode_dims(key[1 + _WIDTH :]),
    )


def _rows(item: Contribution) -> Iterator[bytes]:
    dims = encode_dims(item.dims)
    yield bucket_prefix(TOTAL) + dims
    for granularity, size in GRANULARITIES:
        yield bucket_prefix(granularity, item.requested_ms - item.requested_ms % size) + dims


def aggregate_delta(
    changes: Mapping[str, tuple[RecordFacts | None, RecordFacts | None]],
) -> dict[bytes, Counter]:
    """Counter changes, by row key, for records going from ``old`` to ``new`` (either may be
    None: created, deleted). Rows whose change nets to zero are left out.

    The sum of ``contribution`` over ``_rows``, computed without a Counter per row: the row
    keys of a (dims, minute of ``requestedAt``) pair are built once per call (the hour and day
    buckets follow from the minute's), and the sums are kept as lists until the end."""
    sums: dict[bytes, list[int]] = {}
    rows_of: dict[tuple[str, str, str, int], tuple[bytes, ...]] = {}
    for old, new in changes.values():
        if old is not None and new is not None and _counted_alike(old, new):
            continue  # e.g. a polling lease or a same-status update: no counter moves
        for record, sign in ((old, -1), (new, 1)):
            if record is None:
                continue
            requested_ms = epoch_ms(record.requested_at)
            where = (
                record.provider_id,
                record.type.value,
                record.status.value,
                requested_ms - requested_ms % MINUTE_MS,
            )
            keys = rows_of.get(where)
            if keys is None:
                dims = (where[0], where[1], where[2])
                keys = rows_of[where] = tuple(_rows(Contribution(dims, requested_ms)))
            sent, delivered = record.sent_at, record.delivered_at
            if sent is not None and delivered is not None:
                delivery_ms, delivered_count = sign * (epoch_ms(delivered) - epoch_ms(sent)), sign
            else:
                delivery_ms = delivered_count = 0
            for key in keys:
                row = sums.get(key)
                if row is None:
                    sums[key] = [sign, delivery_ms, delivered_count]
                else:
                    row[0] += sign
                    row[1] += delivery_ms
                    row[2] += delivered_count
    return {key: Counter(*row) for key, row in sums.items() if row != [0, 0, 0]}


# --- secondary indexes ------------------------------------------------------------------------


def time_key(ms: int, message_id: str) -> bytes:
    return max(ms, 0).to_bytes(_WIDTH, "big", signed=False) + message_id.encode()


def parse_time_key(key: bytes) -> tuple[int, str]:
    return int.from_bytes(key[:_WIDTH], "big"), key[_WIDTH:].decode()


def time_bound(ms: int) -> bytes:
    """The first key at time ``ms`` (inclusive lower / exclusive upper bound)."""
    return max(ms, 0).to_bytes(_WIDTH, "big", signed=False)


def requested_key(record: RecordFacts | None) -> bytes | None:
    return None if record is None else time_key(epoch_ms(record.requested_at), record.message_id)


def updated_key(record: RecordFacts | None) -> bytes | None:
    if record is None:
        return None
    return time_key(epoch_ms(record.status_updated_at), record.message_id)


def index_change(old_key: bytes | None, new_key: bytes | None) -> tuple[bytes | None, bytes | None]:
    """(key to delete, key to put) for a secondary index entry."""
    if old_key == new_key:
        return None, None
    return old_key, new_key


# --- range decomposition ----------------------------------------------------------------------


@dataclass(slots=True)
class Cover:
    """A half-open ``requestedAt`` range ``[start, end)`` in ms, split into aggregate buckets
    (granularity, first bucket, end of the last bucket) and edge ranges read record by record."""

    buckets: list[tuple[bytes, int, int]] = field(default_factory=list)
    edges: list[tuple[int, int]] = field(default_factory=list)


def _ceil(ms: int, size: int) -> int:
    return -(-ms // size) * size


def _floor(ms: int, size: int) -> int:
    return ms - ms % size


def cover(start: int, end: int) -> Cover:
    """Split ``[start, end)``: at most two partial minutes at the ends are left as edges, the
    rest becomes whole minutes, hours and days (the widest that fit)."""
    result = Cover()
    if end <= start:
        return result
    m0, m1 = _ceil(start, MINUTE_MS), _floor(end, MINUTE_MS)
    if m0 >= m1:
        result.edges.append((start, end))
        return result
    if start < m0:
        result.edges.append((start, m0))
    if m1 < end:
        result.edges.append((m1, end))
    _cover_aligned(m0, m1, 2, result)
    return result


def _cover_aligned(start: int, end: int, level: int, result: Cover) -> None:
    """Cover ``[start, end)``, aligned to GRANULARITIES[level], with the widest buckets."""
    if start >= end:
        return
    granularity, size = GRANULARITIES[level]
    if level == 0:
        result.buckets.append((granularity, start, end))
        return
    _, wider = GRANULARITIES[level - 1]
    w0, w1 = _ceil(start, wider), _floor(end, wider)
    if w0 >= w1:
        result.buckets.append((granularity, start, end))
        return
    if start < w0:
        result.buckets.append((granularity, start, w0))
    _cover_aligned(w0, w1, level - 1, result)
    if w1 < end:
        result.buckets.append((granularity, w1, end))
