"""The records changelog: its key format, its values, writing it after each batch and
restoring a partition's store from it. The one module that knows the format (the engine writes
and restores through it; ``deliverytrack replay --verify`` reads the live table with it).

Keys, per partition of the compacted changelog topic:

- ``<messageId>``: the record's JSON (a tombstone when the record is deleted);
- ``\\x00c:<providerId>:<providerMessageId>``: a correlation state (held reports, the link);
- ``\\x00z:<messageId>``: a deletion marker or held commands of a messageId without a record;
- ``\\x00position``: ``{"offsets": {topic: next offset}}``, the source offsets the records
  before it reflect; written last in each batch (same partition, idempotent producer).

MessageIds may not start with NUL (the fold refuses them), so the kinds never collide.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord, TopicPartition

from deliverytrack.models.codec import decode_correlation_state, decode_marker, decode_record
from deliverytrack.models.settings import Settings
from deliverytrack.streams.boundary import Refused
from deliverytrack.streams.engine.batch import PartitionResult, read_state
from deliverytrack.streams.engine.publisher import Publisher
from deliverytrack.streams.engine.routing import Output, Router
from deliverytrack.streams.engine.stats import EngineStats
from deliverytrack.streams.kafka.clients import new_consumer
from deliverytrack.streams.kafka.topic_admin import tombstone_retention_ms
from deliverytrack.streams.state.store import (
    CorrelationChange,
    MarkerChange,
    PartitionStore,
    Position,
    RecordChange,
    StaleStore,
    StoreError,
)
from deliverytrack.streams.topics import Topics
from deliverytrack.tables.hot.codec import load_record

log = logging.getLogger(__name__)

POSITION_KEY = b"\x00position"
"""Changelog key of the position record; messageIds may not start with NUL."""
CORRELATION_PREFIX = b"\x00c:"
"""Changelog keys of correlation states: this prefix + providerId:providerMessageId."""
MARKER_PREFIX = b"\x00z:"
"""Changelog keys of deletion markers: this prefix + messageId."""


def encode_position(offsets: Mapping[str, int]) -> bytes:
    return orjson.dumps({"offsets": offsets})


def decode_position(value: bytes) -> dict[str, int]:
    """The offsets of a position record (refused unless it maps topics to offsets)."""
    offsets = orjson.loads(value)["offsets"]
    if not isinstance(offsets, dict) or not all(
        isinstance(t, str) and type(o) is int for t, o in offsets.items()
    ):
        raise Refused("changelog-invalid", "a position record must map topics to offsets")
    return offsets


def record_id(key: bytes | None) -> str | None:
    """The messageId whose record a changelog key holds; None for any other kind of key."""
    if key is None or key.startswith(b"\x00"):
        return None
    return key.decode()


class Changelog:
    """Writes each batch's changes to the changelog; restores a store from it."""

    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        publisher: Publisher,
        router: Router,
        stats: EngineStats,
    ) -> None:
        self.settings = settings
        self.topic = topics.records_changelog
        self.publisher = publisher
        self.router = router
        self.stats = stats
        self.tombstones_ms: int | None = None
        """The changelog's ``delete.retention.ms``, read when first needed."""

    async def publish(
        self, results: Mapping[int, PartitionResult], positions: Mapping[int, Position]
    ) -> dict[int, int]:
        """Latest value per changed key, then the position record, per partition; waits for
        the acks and returns each partition's next changelog offset."""
        topic, send_batches = self.topic, self.publisher.send_batches
        futures: list[asyncio.Future[Any]] = []
        position_futures: dict[int, asyncio.Future[Any]] = {}
        for partition, result in results.items():
            changes = result.records
            self.stats.changelog_writes += len(changes)
            items = ((mid.encode(), raw) for mid, (_, _, raw) in changes.items())
            futures.extend(await send_batches(topic, partition, items))
            states = result.states
            if states:
                self.stats.changelog_writes += len(states)
                items = (
                    (CORRELATION_PREFIX + k.encode(), raw) for k, (_, _, raw) in states.items()
                )
                futures.extend(await send_batches(topic, partition, items))
            marks = result.markers
            if marks:
                self.stats.changelog_writes += len(marks)
                items = ((MARKER_PREFIX + k.encode(), raw) for k, (_, _, raw) in marks.items())
                futures.extend(await send_batches(topic, partition, items))
            # Sent after the records: same partition, idempotent producer, so it lands last.
            position = encode_position(positions[partition].offsets)
            position_futures[partition] = await self.publisher.send(
                topic, POSITION_KEY, position, partition
            )
        await asyncio.gather(*futures)
        return {
            partition: (await future).offset + 1 for partition, future in position_futures.items()
        }

    async def _stale(self, store: PartitionStore) -> bool:
        """Whether ``store`` was last written longer ago than the changelog keeps tombstones
        (``delete.retention.ms``): deletions since then may be gone from the changelog."""
        written = store.written_ms()
        if written is None:
            return False
        if self.tombstones_ms is None:
            self.tombstones_ms = await tombstone_retention_ms(self.settings, self.topic)
        return time.time() * 1000 - written >= self.tombstones_ms

    async def catch_up(self, partition: int, store: PartitionStore) -> Position:
        """Apply changelog records newer than the local store (all of them when it is new);
        returns the position the store then reflects.

        Restore goes through the per-input boundary too: a changelog value that does not
        decode (written by an older version, or by something else) is dead-lettered with its
        bytes and passed over; the key keeps what the store had."""
        position = store.position() or Position()
        tp = TopicPartition(self.topic, partition)
        restorer = new_consumer(
            self.settings,
            client_id=f"{self.settings.app_id}-restore",
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_bytes=16_777_216,
            max_partition_fetch_bytes=8_388_608,
        )
        await restorer.start()
        try:
            restorer.assign([tp])
            end = (await restorer.end_offsets([tp]))[tp]
            if position.changelog_next >= end:
                return position
            if await self._stale(store):
                raise StaleStore(f"partition {partition}: its store predates the tombstones")
            started = time.monotonic()
            restored = 0
            restorer.seek(tp, position.changelog_next)
            while (await restorer.position(tp)) < end:
                fetched = await restorer.getmany(tp, timeout_ms=1000, max_records=50_000)
                restored += await self._apply(fetched.get(tp, []), store, position)
            self.stats.restored += restored
            log.info(
                "fold: partition %s caught up %s changelog records in %.2fs",
                partition,
                restored,
                time.monotonic() - started,
            )
            return position
        finally:
            await restorer.stop()

    async def _apply(
        self, fetched: list[ConsumerRecord[bytes, bytes]], store: PartitionStore, position: Position
    ) -> int:
        """One fetch of changelog records staged and written; their bad values dead-lettered."""
        changes: dict[str, RecordChange] = {}
        states: dict[str, CorrelationChange] = {}
        marks: dict[str, MarkerChange] = {}
        letters: list[Output] = []
        restored = 0
        for msg in fetched:
            position.changelog_next = msg.offset + 1
            try:
                restored += restore_one(msg, store, position, changes, states, marks)
            except StoreError:
                raise
            except Exception as exc:  # this value's problem, not the partition's
                letters.append(self.router.refused(msg, exc))
        await self.publisher.publish(letters)
        store.write(changes, position, states, marks)
        return restored


def restore_one(
    msg: ConsumerRecord[bytes, bytes],
    store: PartitionStore,
    position: Position,
    changes: dict[str, RecordChange],
    states: dict[str, CorrelationChange],
    marks: dict[str, MarkerChange],
) -> int:
    """Stage one changelog value; returns 1 if it is state, 0 for a position record."""
    key, value = msg.key, msg.value
    if key == POSITION_KEY:
        if value is not None:
            position.offsets.update(decode_position(value))
        return 0
    if key is None:
        return 0
    if key.startswith(CORRELATION_PREFIX):
        name = key[len(CORRELATION_PREFIX) :].decode()
        state = None if value is None else read_state(decode_correlation_state, value)
        old_state = states[name][0] if name in states else store.get_correlation(name)
        states[name] = (old_state, state, value)
    elif key.startswith(MARKER_PREFIX):
        mid = key[len(MARKER_PREFIX) :].decode()
        mark = None if value is None else read_state(decode_marker, value)
        old_mark = marks[mid][0] if mid in marks else store.get_marker(mid)
        marks[mid] = (old_mark, mark, value)
    else:
        mid = key.decode()
        new = None if value is None else load_record(value) or read_state(decode_record, value)
        old = changes[mid][0] if mid in changes else store.get_for_fold(mid)
        changes[mid] = (old, new, value)
    return 1
