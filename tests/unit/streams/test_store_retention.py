"""Retention in the partition store and the fold engine, on a real RocksDB (no broker): the
expiry index, deletions with markers, and the retention timer's read-only, bounded scan."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from aiokafka.structs import ConsumerRecord

from deliverytrack.models.codec import encode, encode_record
from deliverytrack.models.enums import TrackingStatus
from deliverytrack.models.events import MessageEvent, RecordExpiryDue
from deliverytrack.models.settings import Settings
from deliverytrack.streams.engine.loop import FoldEngine
from deliverytrack.streams.engine.routing import Output
from deliverytrack.streams.state.store import MarkerChange, PartitionStore, Position
from deliverytrack.tables.fold import fold
from tests.factories import T0, as_model, send_recorded_factory, update_status_factory

DAY = timedelta(days=1)
RETENTION = {"enabled": True, "tenantOverrideDays": {"opsLogs": 1}, "scanBatchSize": 5}


def engine_with_store(tmp_path: Path, count: int) -> tuple[FoldEngine, PartitionStore]:
    """``count`` DELIVERED opsLogs records, m-0000 requested at T0, m-0001 a second later..."""
    settings = Settings(data_dir=tmp_path, retention=RETENTION)
    engine = FoldEngine(settings)
    store = PartitionStore(tmp_path / "p0.db")
    engine.partitions.attach(0, store)
    changes = {}
    for i in range(count):
        mid = f"m-{i:04d}"
        send = send_recorded_factory(
            mid, requested_at=T0 + timedelta(seconds=i), retention_class="opsLogs"
        )
        record, _ = fold(None, send, engine.policy)
        record, _ = fold(record, update_status_factory(TrackingStatus.DELIVERED, mid))
        assert record is not None
        changes[mid] = (None, record, encode_record(record))
    store.write(changes, Position())
    return engine, store


def consumed(engine: FoldEngine, events: list[MessageEvent]) -> list[ConsumerRecord[bytes, bytes]]:
    topics = engine.topics
    out = []
    for offset, event in enumerate(events):
        topic = topics.due_checks if isinstance(event, RecordExpiryDue) else topics.send_results
        out.append(
            ConsumerRecord(
                topic, 0, offset, 0, 1, event.message_id.encode(), encode(event), None, 0, 0, ()
            )
        )
    return out


def test_the_expiry_scan_is_ordered_bounded_and_reads_only(tmp_path: Path) -> None:
    engine, store = engine_with_store(tmp_path, 20)
    # Deadlines: requestedAt + 1 day. At T0 + 1 day + 9 s, m-0000..m-0009 are past theirs.
    now = T0 + DAY + timedelta(seconds=9)
    assert [mid for _, mid in store.expired(now, 100)] == [f"m-{i:04d}" for i in range(10)]
    assert store.expired(T0 + DAY - timedelta(milliseconds=1), 100) == []
    before = list(store.iter_raw()), store.position()
    found = engine.timers.scan_expiries(now)
    assert (list(store.iter_raw()), store.position()) == before
    assert [mid for _, mid in found] == [f"m-{i:04d}" for i in range(5)]  # scanBatchSize
    store.close()


def test_a_folded_expiry_deletes_the_record_its_index_entry_and_leaves_a_marker(
    tmp_path: Path,
) -> None:
    engine, store = engine_with_store(tmp_path, 3)
    now = T0 + 2 * DAY
    record = store.get("m-0001")
    assert record is not None and record.retention_until is not None
    expiry = RecordExpiryDue(
        event_id="expire:m-0001:x",
        message_id="m-0001",
        expire_at=record.retention_until,
        issued_at=now,
    )
    outputs: list[Output] = []
    markers: dict[str, MarkerChange] = {}
    changes = engine.batch.fold(engine.store(0), consumed(engine, [expiry]), outputs, markers)
    assert {mid: (as_model(old), new, raw) for mid, (old, new, raw) in changes.items()} == {
        "m-0001": (record, None, None)
    }
    assert set(markers) == {"m-0001"} and markers["m-0001"][0] is None
    assert [out.topic for out in outputs] == [engine.topics.record_deletions]
    store.write(changes, Position(), None, markers)
    assert store.get("m-0001") is None
    assert [mid for _, mid in store.expired(now, 10)] == ["m-0000", "m-0002"]
    marker = store.get_marker("m-0001")
    assert marker is not None and marker.reason == "retention"
    assert store.forgettable_markers(now, 10) == []
    assert [mid for _, mid in store.forgettable_markers(marker.forget_at, 10)] == ["m-0001"]

    # The original send result again (a late duplicate): dropped, nothing written or emitted.
    again = send_recorded_factory("m-0001", requested_at=T0 + timedelta(seconds=1))
    outputs.clear()
    markers.clear()
    changes = engine.batch.fold(
        engine.store(0), consumed(engine, [again, expiry]), outputs, markers
    )
    assert (changes, markers, outputs) == ({}, {}, [])

    # The marker's own expiry forgets it (and its index entry).
    forget = RecordExpiryDue(
        event_id="expire:m-0001:y",
        message_id="m-0001",
        expire_at=marker.forget_at,
        issued_at=marker.forget_at,
    )
    changes = engine.batch.fold(engine.store(0), consumed(engine, [forget]), outputs, markers)
    assert changes == {} and markers == {"m-0001": (marker, None, None)}
    store.write(changes, Position(), None, markers)
    assert store.get_marker("m-0001") is None
    assert store.forgettable_markers(marker.forget_at + DAY, 10) == []
    store.close()


def test_delete_and_recreate_in_one_batch(tmp_path: Path) -> None:
    """A purge-like deletion and a new send of the same id in one batch: one record, no
    marker left behind, the index follows the new record."""
    engine, store = engine_with_store(tmp_path, 1)
    record = store.get("m-0000")
    assert record is not None and record.retention_until is not None
    expiry = RecordExpiryDue(
        event_id="e", message_id="m-0000", expire_at=record.retention_until, issued_at=T0 + DAY
    )
    new_send = send_recorded_factory("m-0000", requested_at=T0 + 3 * DAY, event_id="send-2")
    outputs: list[Output] = []
    markers: dict[str, MarkerChange] = {}
    changes = engine.batch.fold(
        engine.store(0), consumed(engine, [expiry, new_send]), outputs, markers
    )
    assert markers == {}  # created and removed within the batch: nothing to write
    old, new, _ = changes["m-0000"]
    new = as_model(new)
    assert as_model(old) == record and new is not None and new.requested_at == T0 + 3 * DAY
    store.write(changes, Position(), None, markers)
    assert store.get_marker("m-0000") is None
    assert store.expired(T0 + 10 * DAY, 10) == []  # SENT: not at rest, no retention expiry
    store.close()
