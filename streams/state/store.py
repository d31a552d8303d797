"""RocksDB state of one partition: records, the due index and the applied offsets.

One RocksDB database per partition (as Faust's rocksdb store does), through rocksdict in raw
mode. Key space, by one-byte prefix:

- ``r`` + messageId -> TrackingRecord JSON; a record the hot path held is tagged (NUL, a 4-byte
  epoch, then the JSON: read back without the hot path's check while the epoch is current, see
  ``_hot_tag``); every reader outside this class gets the plain JSON
- ``d`` + due key (big-endian due ms + messageId) -> empty; see ``tables.due_index``
- ``m`` + name -> bookkeeping JSON (source offsets, changelog position, the hot path's tag)
- ``c`` + providerId:providerMessageId -> CorrelationState JSON (provider-id index, held reports)
- ``x`` + hold key (big-endian deadline ms + provider key) -> empty; see ``tables.correlation``
- ``a`` + aggregate row key (granularity, bucket, dims) -> counters; see ``tables.aggregates``
- ``q`` / ``u`` + big-endian requestedAt / statusUpdatedAt ms + messageId -> empty
- ``e`` + expiry key (big-endian expiry ms + messageId) -> empty; see ``tables.retention``
- ``z`` + messageId -> DeletionMarker JSON of a deleted record, or CommandHold JSON of commands
  waiting for their send result; see ``tables.deletion``
- ``y`` + marker key (big-endian forget ms + messageId) -> empty
- ``h`` + messageId -> number of commands held for it (the CommandHold markers)

Every batch is one atomic WriteBatch: records, due-index, aggregate and index changes and
offsets together, so the aggregates are exactly as current as the records.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from rocksdict import Options, Rdict, WriteBatch

import deliverytrack.models
import deliverytrack.tables
from deliverytrack import __version__
from deliverytrack.models.codec import (
    Marker,
    decode_correlation_state,
    decode_marker,
    decode_record,
)
from deliverytrack.models.correlation import CommandHold, CorrelationState
from deliverytrack.models.records import TrackingRecord
from deliverytrack.streams.state.cache import RecordCache
from deliverytrack.streams.state.memory import RocksMemory
from deliverytrack.tables.aggregates import (
    TOTAL,
    Counter,
    Dims,
    aggregate_delta,
    bucket_prefix,
    decode_dims,
    index_change,
    parse_time_key,
    requested_key,
    time_bound,
    updated_key,
)
from deliverytrack.tables.correlation import hold_index_change
from deliverytrack.tables.due_index import due_index_change, parse_due_key, upper_bound
from deliverytrack.tables.facts import RecordFacts
from deliverytrack.tables.hot import codec as hot_codec
from deliverytrack.tables.hot.codec import HotRecord, load_record
from deliverytrack.tables.retention import expiry_index_change, marker_index_change

EXPIRY = b"e"
MARKER = b"z"
MARKER_EXPIRY = b"y"
MarkerChange = tuple[Marker | None, Marker | None, bytes | None]

RECORD = b"r"
DUE = b"d"
META = b"m"
CORRELATION = b"c"
HOLD = b"x"
AGGREGATE = b"a"
REQUESTED = b"q"
UPDATED = b"u"
HELD = b"h"

CorrelationChange = tuple[CorrelationState | None, CorrelationState | None, bytes | None]
Record = HotRecord | TrackingRecord
"""A record as the fold holds it: its JSON dict (the hot path) or its model."""
RecordChange = tuple[Record | None, Record | None, bytes | None]
_META_POSITION = META + b"position"
_META_DERIVED = META + b"derived"
_META_HOT = META + b"hot"
_META_WRITTEN = META + b"written"
DERIVED_VERSION = b"1"
"""Version of the derived data (aggregates, secondary indexes); a store without it, or with
another version, rebuilds them from its records when opened."""


class StoreError(RuntimeError):
    """RocksDB itself failed (an infrastructure failure: the worker stops)."""


@dataclass(slots=True)
class Position:
    """What the local state reflects: next source offsets and next changelog offset."""

    offsets: dict[str, int] = field(default_factory=dict)
    changelog_next: int = 0

    def to_json(self) -> bytes:
        return orjson.dumps({"offsets": self.offsets, "changelogNext": self.changelog_next})

    @classmethod
    def from_json(cls, raw: bytes) -> Position:
        data = orjson.loads(raw)
        return cls(offsets=dict(data.get("offsets", {})), changelog_next=data["changelogNext"])


def _move(batch: WriteBatch, index: bytes, removed: bytes | None, added: bytes | None) -> None:
    """Move an index entry: delete the old key, put the new one (either may be None)."""
    if removed is not None:
        batch.delete(index + removed)
    if added is not None:
        batch.put(index + added, b"")


_TAG = b"\x00"
"""A record value that starts with NUL (JSON never does) is tagged: NUL, a 4-byte epoch, the
JSON. See :func:`_hot_tag`."""
_TAG_BYTES = 5


@functools.cache
def hot_source_digest() -> str:
    """A digest of the source the hot path's checks and fold come from (every module of
    ``deliverytrack.tables`` and ``deliverytrack.models``: the models digest names validators,
    not their bodies), or ``""`` where there is no source to read (a zipped or bytecode-only
    install). An edited tree with the same models digest and version then also moves the
    tag's epoch on. Hidden files (an editor's lock links) are left out. Read once, when the
    first store opens (not at import: every CLI command imports this module)."""
    h = hashlib.sha256()
    found = False
    for package in (deliverytrack.models, deliverytrack.tables):
        root = Path(package.__file__ or ".").parent
        for path in sorted(root.rglob("*.py")):
            name = path.relative_to(root).as_posix()
            if any(part.startswith(".") for part in name.split("/")):
                continue
            try:
                data = path.read_bytes()
            except OSError:
                data = b"\0unreadable"
            found = True
            h.update(f"{package.__name__}/{name}".encode() + b"\0" + data)
    return h.hexdigest()[:16] if found else ""


def _hot_tag(db: Rdict) -> bytes | None:
    """The tag this store writes on records the hot path held, or None (hot path off).

    A record read back with this tag needs no ``load_record`` check (~10 µs): it was written
    by the hot path of this same code (models digest, the hot path's source digest, package
    version), which held it. The store keeps what it tags under, with an epoch; when that
    differs at open (an upgrade, an edited tree), the epoch moves on, so what was tagged before
    is checked again."""
    if not hot_codec.ENABLED:
        return None
    under = f"{hot_codec.MODELS_DIGEST}:{hot_source_digest()}:{__version__}"
    meta = db.get(_META_HOT)
    known: dict[str, Any] = orjson.loads(meta) if meta is not None else {"epoch": 0}
    epoch = int(known["epoch"])
    if known.get("under") != under:
        epoch = (epoch + 1) % 2**32
        db.put(_META_HOT, orjson.dumps({"under": under, "epoch": epoch}))
    return _TAG + epoch.to_bytes(4, "big")


def _untagged(value: bytes) -> bytes:
    """A stored record's JSON (its tag, if any, removed)."""
    return value[_TAG_BYTES:] if value[:1] == _TAG else value


def _facts(record: Record | None) -> RecordFacts | None:
    if record is None or type(record) is not HotRecord:
        return record  # type: ignore[return-value]  # a TrackingRecord or None
    return record.facts()


def _put_or_delete(batch: WriteBatch, key: bytes, raw: bytes | None) -> None:
    if raw is None:
        batch.delete(key)
    else:
        batch.put(key, raw)


def _expiries(
    batch: WriteBatch,
    changes: Mapping[str, tuple[RecordFacts | None, RecordFacts | None]],
    markers: Mapping[str, MarkerChange],
) -> None:
    """Expiry-index entries of the records, and the deletion markers with theirs."""
    for old, new in changes.values():
        _move(batch, EXPIRY, *expiry_index_change(old, new))
    for message_id, (old_marker, new_marker, raw) in markers.items():
        key = MARKER + message_id.encode()
        _put_or_delete(batch, key, None if new_marker is None else raw)
        _move(batch, MARKER_EXPIRY, *marker_index_change(old_marker, new_marker))
        held = new_marker.commands if isinstance(new_marker, CommandHold) else ()
        if held or isinstance(old_marker, CommandHold):
            count = str(len(held)).encode() if held else None
            _put_or_delete(batch, HELD + message_id.encode(), count)


class StaleStore(Exception):  # noqa: N818 - a state, like Kafka Streams' TaskCorruptedException
    """A partition's store is older than the changelog keeps its tombstones, and the changelog
    has records after it: it may have missed deletions; restore the partition afresh."""


def destroy_store(store: PartitionStore) -> None:
    """Close ``store`` and delete its database from disk."""
    store.close()
    Rdict.destroy(str(store.path), Options(raw_mode=True))


class PartitionStore:
    """One partition's RocksDB; ``cache_size``: how many records a :class:`RecordCache` keeps."""

    def __init__(self, path: Path, cache_size: int = 0, memory: RocksMemory | None = None) -> None:
        """``memory``: the block cache and write buffers the worker's stores share (bounded
        together); without it, RocksDB's defaults (per store, unbounded in sum)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        if memory is not None:
            memory.configure(options)
        self.path = path
        self._db = Rdict(str(path), options)
        self.closed = False
        self.cache = RecordCache(cache_size)
        self._tag = _hot_tag(self._db)
        if self._db.get(_META_DERIVED) != DERIVED_VERSION:
            self._rebuild_derived()

    def _rebuild_derived(self) -> None:
        """Recompute aggregates and secondary indexes from the records (a store written by a
        version without them, or with another layout)."""
        for prefix in (AGGREGATE, REQUESTED, UPDATED):
            batch = WriteBatch(raw_mode=True)
            for key in self._db.keys(from_key=prefix):
                if not isinstance(key, bytes) or not key.startswith(prefix):
                    break
                batch.delete(key)
            self._db.write(batch)
        chunk: dict[str, tuple[TrackingRecord | None, TrackingRecord | None]] = {}
        for record in self.records():
            chunk[record.message_id] = (None, record)
            if len(chunk) >= 10_000:
                self._write_derived_only(chunk)
                chunk = {}
        self._write_derived_only(chunk)
        self._db.put(_META_DERIVED, DERIVED_VERSION)

    def _write_derived_only(
        self, changes: Mapping[str, tuple[TrackingRecord | None, TrackingRecord | None]]
    ) -> None:
        batch = WriteBatch(raw_mode=True)
        self._derived(batch, changes)
        self._db.write(batch)

    def close(self) -> None:
        self.closed = True
        self.cache.resize(0)
        self._db.close()

    @property
    def cached_records(self) -> int:
        return len(self.cache)

    @property
    def cache_hits(self) -> int:
        return self.cache.hits

    @property
    def cache_misses(self) -> int:
        return self.cache.misses

    # --- reads ------------------------------------------------------------------------------

    def _get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._db.get(key)
        except Exception as exc:
            raise StoreError(f"RocksDB read failed in {self.path}: {exc}") from exc
        return value

    def get_raw(self, message_id: str) -> bytes | None:
        value = self._get(RECORD + message_id.encode())
        return None if value is None else _untagged(value)

    def get(self, message_id: str) -> TrackingRecord | None:
        """The record as its model (queries, timers), from the cache's JSON or RocksDB's."""
        raw = self.cache.raw(message_id) or self.get_raw(message_id)
        return None if raw is None else decode_record(raw)

    def get_for_fold(self, message_id: str) -> Record | None:
        """The record as the fold reads it: a ``HotRecord`` if the hot path can hold it
        (tagged, or ``load_record``), else its model; raises if it does not decode."""
        cached = self.cache.get(message_id)
        if cached is not None:
            return cached
        value = self._get(RECORD + message_id.encode())
        if value is None:
            return None
        self.cache.misses += 1
        raw = _untagged(value)
        trusted = self._tag is not None and value[:_TAG_BYTES] == self._tag
        hot = HotRecord(orjson.loads(raw), raw) if trusted else load_record(raw)
        record: Record = hot or decode_record(raw)
        self.cache.put(message_id, record)
        return record

    def iter_raw(self) -> Iterator[tuple[str, bytes]]:
        for key, value in self._db.items(from_key=RECORD):
            if not isinstance(key, bytes) or not key.startswith(RECORD):
                break
            yield key[1:].decode(), _untagged(value)

    def records(self) -> Iterator[TrackingRecord]:
        for _, raw in self.iter_raw():
            yield decode_record(raw)

    def due(
        self,
        now: datetime,
        limit: int,
        skip: Callable[[int, str], bool] | None = None,
        max_skipped: int = 0,
    ) -> list[tuple[int, str]]:
        """Up to ``limit`` (due ms, messageId) pairs due at or before ``now``, oldest first.
        Pairs for which ``skip`` holds (checks already in flight) are passed over without
        counting, at most ``max_skipped`` of them, so they cannot hide the records behind them."""
        return self._scan_index(DUE, now, limit, skip, max_skipped)

    def expired(self, now: datetime, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` (expiry ms, messageId) pairs of records to delete by ``now``."""
        return self._scan_index(EXPIRY, now, limit)

    def forgettable_markers(self, now: datetime, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` (forget ms, messageId) pairs of deletion markers past their time."""
        return self._scan_index(MARKER_EXPIRY, now, limit)

    def get_marker(self, message_id: str) -> Marker | None:
        raw = self._get(MARKER + message_id.encode())
        return None if raw is None else decode_marker(raw)

    def held_commands(self, limit: int = 100_000) -> int:
        """Commands held for their send result in this partition (/health shows it), from
        the ``h`` index: O(messageIds with held commands), which the hold time keeps few."""
        count = 0
        for n, (key, value) in enumerate(self._db.items(from_key=HELD)):
            if n >= limit or not isinstance(key, bytes) or not key.startswith(HELD):
                break
            count += int(value)
        return count

    def _scan_index(
        self,
        prefix: bytes,
        now: datetime,
        limit: int,
        skip: Callable[[int, str], bool] | None = None,
        max_skipped: int = 0,
    ) -> list[tuple[int, str]]:
        bound = prefix + upper_bound(now)
        found: list[tuple[int, str]] = []
        if limit <= 0:
            return found
        skipped = 0
        for key in self._db.keys(from_key=prefix):
            if not isinstance(key, bytes) or key >= bound or not key.startswith(prefix):
                break
            entry = parse_due_key(key[1:])
            if skip is not None and skip(*entry):
                skipped += 1
                if skipped > max_skipped:
                    break
                continue
            found.append(entry)
            if len(found) >= limit:
                break
        return found

    def get_correlation_raw(self, key: str) -> bytes | None:
        return self._get(CORRELATION + key.encode())

    def get_correlation(self, key: str) -> CorrelationState | None:
        raw = self.get_correlation_raw(key)
        return None if raw is None else decode_correlation_state(raw)

    def expired_holds(self, now: datetime, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` (deadline ms, provider key) pairs whose holding time is over."""
        return self._scan_index(HOLD, now, limit)

    def counters(
        self, granularity: bytes = TOTAL, start_ms: int = 0, end_ms: int | None = None
    ) -> Iterator[tuple[Dims, Counter]]:
        """Aggregate rows of ``granularity`` whose bucket starts in ``[start_ms, end_ms)``
        (``TOTAL`` has one bucket, 0)."""
        first = AGGREGATE + bucket_prefix(granularity, start_ms)
        bound = AGGREGATE + (
            bucket_prefix(granularity, end_ms)
            if end_ms is not None
            else bytes([granularity[0] + 1])
        )
        skip = len(first)
        for key, value in self._db.items(from_key=first):
            if not isinstance(key, bytes) or key >= bound:
                break
            yield decode_dims(key[skip:]), Counter.unpack(value)

    def walk(
        self, index: bytes, start_ms: int, end_ms: int, *, descending: bool = False
    ) -> Iterator[tuple[int, str]]:
        """(ms, messageId) of the ``requestedAt`` (``REQUESTED``) or ``statusUpdatedAt``
        (``UPDATED``) index in ``[start_ms, end_ms)``, in time then messageId order."""
        low, high = index + time_bound(start_ms), index + time_bound(end_ms)
        if descending:
            for key in self._db.keys(backwards=True, from_key=high):
                if not isinstance(key, bytes) or key < low:
                    break
                if key >= high:  # the seek lands on the bound itself only if it is a key
                    continue
                yield parse_time_key(key[1:])
        else:
            for key in self._db.keys(from_key=low):
                if not isinstance(key, bytes) or key >= high:
                    break
                yield parse_time_key(key[1:])

    def get_many_raw(self, message_ids: Iterable[str]) -> list[bytes | None]:
        keys: list[Any] = [RECORD + mid.encode() for mid in message_ids]
        values: list[bytes | None] = (self._db.get(keys) or []) if keys else []
        return [None if value is None else _untagged(value) for value in values]

    def position(self) -> Position | None:
        raw = self._db.get(_META_POSITION)
        return None if raw is None else Position.from_json(raw)

    def written_ms(self) -> int | None:
        """When this store was last written (wall clock, ms; None before this was kept): a
        store older than the changelog keeps its tombstones may have missed deletions."""
        raw = self._db.get(_META_WRITTEN)
        return int(raw) if raw is not None and raw.isdigit() else None

    # --- writes -----------------------------------------------------------------------------

    def write(
        self,
        changes: Mapping[str, RecordChange],
        position: Position,
        correlations: Mapping[str, CorrelationChange] | None = None,
        markers: Mapping[str, MarkerChange] | None = None,
    ) -> None:
        """Apply ``{messageId: (old, new, new_json)}``, the correlation states
        ``{providerKey: (old, new, new_json)}``, the deletion markers ``{messageId: (old, new,
        new_json)}`` and the new position atomically. A record change with ``new`` None
        deletes the record (and its index entries)."""
        batch = WriteBatch(raw_mode=True)
        facts = {mid: (_facts(old), _facts(new)) for mid, (old, new, _) in changes.items()}
        _expiries(batch, facts, markers or {})
        for provider_key, (old_state, new_state, raw) in (correlations or {}).items():
            key = CORRELATION + provider_key.encode()
            _put_or_delete(batch, key, None if new_state is None else raw)
            _move(batch, HOLD, *hold_index_change(old_state, new_state))
        tag = self._tag
        for message_id, (_, new, raw) in changes.items():
            key = RECORD + message_id.encode()
            if tag is not None and raw is not None and type(new) is HotRecord:
                raw = tag + raw
            _put_or_delete(batch, key, None if new is None else raw)
        for old_facts, new_facts in facts.values():
            _move(batch, DUE, *due_index_change(old_facts, new_facts))
        self._derived(batch, facts)
        batch.put(_META_POSITION, position.to_json())
        batch.put(_META_WRITTEN, str(int(time.time() * 1000)).encode())  # see written_ms
        self._db.write(batch)
        for message_id, (_, new, _) in changes.items():
            self.cache.put(message_id, new)

    def _derived(
        self,
        batch: WriteBatch,
        changes: Mapping[str, tuple[RecordFacts | None, RecordFacts | None]],
    ) -> None:
        """Aggregate rows and secondary index entries for ``changes``, into ``batch``."""
        for old, new in changes.values():
            # A key is the time in ms and the messageId: the same time, the same key.
            if old is None or new is None or old.requested_at != new.requested_at:
                _move(batch, REQUESTED, *index_change(requested_key(old), requested_key(new)))
            if old is None or new is None or old.status_updated_at != new.status_updated_at:
                _move(batch, UPDATED, *index_change(updated_key(old), updated_key(new)))
        delta = aggregate_delta(changes)
        if not delta:
            return
        keys: list[Any] = [AGGREGATE + key for key in delta]
        currents: list[bytes | None] = self._db.get(keys) or []
        for key, current, change in zip(keys, currents, delta.values(), strict=True):
            row = Counter() if current is None else Counter.unpack(current)
            row.add(change)
            if row.is_zero():
                batch.delete(key)
            else:
                batch.put(key, row.pack())
