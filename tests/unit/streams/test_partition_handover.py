"""A partition that moves to another worker leaves no copy of its state behind, and one that
comes back is restored from the changelog alone.

While another worker owns the partition, it may delete records (a purge, retention): the
tombstone goes to the compacted changelog, which drops it once ``delete.retention.ms`` has
passed. A copy left on this worker's disk is never told, so it would keep the deleted record's
personal data, and, restored from its old changelog position once the tombstone is gone,
answer with the record again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiokafka.structs import ConsumerRecord, TopicPartition

from deliverytrack.models.codec import encode_record
from deliverytrack.models.settings import Settings
from deliverytrack.streams.engine.changelog import POSITION_KEY, encode_position, restore_one
from deliverytrack.streams.engine.loop import FoldEngine
from deliverytrack.streams.engine.partitions import OwnedPartitions
from deliverytrack.streams.state.store import (
    CorrelationChange,
    MarkerChange,
    PartitionStore,
    Position,
    RecordChange,
    StaleStore,
)
from deliverytrack.tables.fold import fold
from deliverytrack.tables.hot.codec import load_record
from tests.factories import send_recorded_factory

Log = list[tuple[int, bytes, bytes | None]]


def _msg(offset: int, key: bytes, value: bytes | None) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="changelog", partition=0, offset=offset, timestamp=0, timestamp_type=1,
        key=key, value=value, checksum=None, serialized_key_size=len(key),
        serialized_value_size=0 if value is None else len(value), headers=(),
    )  # fmt: skip


def _restorer(log: Log):  # type: ignore[no-untyped-def]
    """``Changelog.catch_up`` over ``log``: what lies at or after the store's position."""

    async def restore(partition: int, store: PartitionStore) -> Position:
        position = store.position() or Position()
        changes: dict[str, RecordChange] = {}
        states: dict[str, CorrelationChange] = {}
        marks: dict[str, MarkerChange] = {}
        for offset, key, value in log:
            if offset >= position.changelog_next:
                position.changelog_next = offset + 1
                restore_one(_msg(offset, key, value), store, position, changes, states, marks)
        store.write(changes, position, states, marks)
        return position

    return restore


async def test_a_partition_that_comes_back_is_not_served_from_a_stale_copy(
    tmp_path: Path,
) -> None:
    record, _ = fold(None, send_recorded_factory("m-1"))  # to: 01012345678
    assert record is not None
    raw = encode_record(record)
    position = encode_position({"send-results": 1})
    # This worker folds m-1 (changelog offsets 0 and 1), then the partition moves away.
    log: Log = [(0, b"m-1", raw), (1, POSITION_KEY, position)]
    owned = OwnedPartitions(tmp_path, 0)
    await owned.assign({0}, _restorer(log))
    owned.stores[0].write({"m-1": (None, load_record(raw) or record, raw)}, Position({}, 2))
    await owned.assign(set(), _restorer(log))
    assert not (tmp_path / "partition-0.db").exists()  # nothing of m-1 is left here
    # The new owner purges m-1 (offsets 2 and 3); compaction then keeps the last position only.
    log = [(3, POSITION_KEY, encode_position({"send-results": 2}))]
    await owned.assign({0}, _restorer(log))
    assert owned.stores[0].get("m-1") is None
    assert list(owned.stores[0].iter_raw()) == []
    owned.close_all()


async def test_a_revocation_waits_for_the_batch_in_flight(tmp_path: Path) -> None:
    """The consumer rejoins the group once the revocation returns; the batch being folded
    (the engine's lock held) must have written its changelog and RocksDB batch by then, or the
    partition's next owner restores while this worker still writes."""
    engine = FoldEngine(Settings(data_dir=tmp_path))
    engine.partitions.ready.add(0)
    in_flight = engine._lock  # noqa: SLF001 - what a batch holds while it is processed
    await in_flight.acquire()
    revoking = asyncio.create_task(engine.on_partitions_revoked({TopicPartition("t", 0)}))
    await asyncio.sleep(0.05)
    assert engine.partitions.ready == set()  # queries stop at once ...
    assert not revoking.done()  # ... the revocation waits for the batch
    in_flight.release()
    await asyncio.wait_for(revoking, 1)


async def test_a_store_older_than_the_tombstones_is_restored_afresh(tmp_path: Path) -> None:
    """A worker down longer than the changelog keeps tombstones (``delete.retention.ms``)
    restarts with a store that may have missed deletions: when the changelog has records after
    it, the store is dropped and the partition restored from the changelog alone."""
    record, _ = fold(None, send_recorded_factory("m-1"))
    assert record is not None
    raw = encode_record(record)
    log: Log = [(0, b"m-1", raw), (1, POSITION_KEY, encode_position({"send-results": 1}))]
    owned = OwnedPartitions(tmp_path, 0)
    await owned.assign({0}, _restorer(log))
    assert owned.stores[0].get("m-1") is not None
    written = owned.stores[0].written_ms()
    assert written is not None and abs(written - time.time() * 1000) < 60_000
    owned.close_all()  # the worker stops; meanwhile m-1 is purged, its tombstone compacted away

    engine = FoldEngine(Settings(data_dir=tmp_path / "engine"))
    engine.changelog.tombstones_ms = 1_000
    later: Log = [(3, POSITION_KEY, encode_position({"send-results": 2}))]
    restores: list[int | None] = []

    async def restore(partition: int, store: PartitionStore) -> Position:
        restores.append(store.written_ms())
        if store.written_ms() is not None and await engine.changelog._stale(store):  # noqa: SLF001
            raise StaleStore(f"partition {partition}: its store predates the tombstones")
        return await _restorer(later)(partition, store)

    fresh = PartitionStore(tmp_path / "fresh.db")
    fresh.write({}, Position())  # written just now: not stale
    assert not await engine.changelog._stale(fresh)  # noqa: SLF001
    fresh.close()
    time.sleep(1.1)  # older than the changelog's tombstones (1 s here)
    await owned.assign({0}, restore)
    assert restores[0] is not None and restores[1] is None  # dropped, then restored afresh
    assert owned.stores[0].get("m-1") is None
    assert owned.stores[0].position() == Position({"send-results": 2}, 4)
