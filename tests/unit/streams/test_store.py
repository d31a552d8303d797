"""The partition store and the timer's scan, on a real RocksDB in tmp_path (no broker)."""

from __future__ import annotations

import asyncio
import gc
import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from deliverytrack.models.codec import decode_record, encode_record
from deliverytrack.models.enums import TrackingStatus
from deliverytrack.models.events import DueCheckIssued
from deliverytrack.models.settings import Settings
from deliverytrack.streams.engine.loop import FoldEngine
from deliverytrack.streams.engine.stats import gc_paused
from deliverytrack.streams.state.store import PartitionStore, Position
from deliverytrack.tables.fold import fold
from deliverytrack.tables.hot.codec import HotRecord, load_record, to_model
from tests.factories import T0, send_recorded_factory, update_status_factory


def fill(store: PartitionStore, count: int) -> None:
    changes = {}
    for i in range(count):
        record, _ = fold(
            None, send_recorded_factory(f"m-{i:04d}", requested_at=T0 + timedelta(seconds=i))
        )
        assert record is not None
        raw = encode_record(record)
        changes[record.message_id] = (None, load_record(raw) or record, raw)  # as the fold does
    store.write(changes, Position(offsets={"t": count}, changelog_next=count))


def test_write_read_and_position(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0.db")
    fill(store, 10)
    assert store.get("m-0003") is not None
    assert store.get("nope") is None
    assert [mid for mid, _ in store.iter_raw()] == [f"m-{i:04d}" for i in range(10)]
    assert store.position() == Position(offsets={"t": 10}, changelog_next=10)
    store.close()
    reopened = PartitionStore(tmp_path / "p0.db")
    assert reopened.get("m-0009") is not None
    reopened.close()


def test_due_scan_is_ordered_bounded_and_follows_the_record(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0.db")
    fill(store, 100)
    # Records are due 30 s after their request: m-0000 at T0+30s ... m-0099 at T0+129s.
    due = store.due(T0 + timedelta(seconds=39), limit=1000)
    assert [mid for _, mid in due] == [f"m-{i:04d}" for i in range(10)]
    assert [mid for _, mid in store.due(T0 + timedelta(seconds=200), limit=3)] == [
        "m-0000",
        "m-0001",
        "m-0002",
    ]
    assert store.due(T0, limit=10) == []
    # A delivered record leaves the due index.
    old = store.get("m-0000")
    new, _ = fold(old, update_status_factory(TrackingStatus.DELIVERED, "m-0000"))
    assert new is not None
    store.write({"m-0000": (old, new, encode_record(new))}, Position())
    assert [mid for _, mid in store.due(T0 + timedelta(seconds=31), limit=10)] == ["m-0001"]
    store.close()


def test_the_timer_scan_reads_only(tmp_path: Path) -> None:
    """Invariant 1: the timer publishes due checks and never writes the table."""
    settings = Settings(data_dir=tmp_path, polling={"batchSize": 5})
    engine = FoldEngine(settings)
    store = PartitionStore(tmp_path / "p0.db")
    fill(store, 20)
    engine.partitions.attach(0, store)
    before = list(store.iter_raw()), store.due(T0 + timedelta(days=1), 1000), store.position()
    checks = engine.timers.collect_due_checks(T0 + timedelta(seconds=45))
    after = list(store.iter_raw()), store.due(T0 + timedelta(days=1), 1000), store.position()
    assert before == after
    assert len(checks) == 5  # batchSize
    first = DueCheckIssued.model_validate_json(checks[0][1])
    assert first.message_id == "m-0000" and checks[0][0] == b"m-0000"
    assert first.due_at == T0 + timedelta(seconds=30)
    assert first.issued_at == T0 + timedelta(seconds=45)
    store.close()


def test_checks_in_flight_do_not_hide_the_records_behind_them(tmp_path: Path) -> None:
    """At 1,000 polls/s more checks are in flight than batchSize: the scan passes over them
    (bounded by how many are in flight) instead of returning them again and stalling."""
    store = PartitionStore(tmp_path / "p0.db")
    fill(store, 10)
    now = T0 + timedelta(hours=1)
    head = store.due(now, 3)
    in_flight = set(head)
    after = store.due(now, 3, lambda ms, mid: (ms, mid) in in_flight, len(in_flight))
    assert [mid for _, mid in after] == ["m-0003", "m-0004", "m-0005"]
    # The pass-over is bounded: with a budget of 1 the scan stops at the second in-flight one.
    assert store.due(now, 3, lambda ms, mid: (ms, mid) in in_flight, 1) == []
    store.close()


def test_the_record_cache_is_written_through_and_bounded(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0.db", cache_size=5)
    fill(store, 50)
    # The cache keeps the records written last, as much as its ring holds; the others are
    # read (and checked) from RocksDB.
    kept = store.get("m-0049")
    assert kept is not None and store.cache_hits == 1 and store.cache_misses == 0
    assert 0 < store.cached_records < 50
    first = store.get_for_fold("m-0000")
    assert first is not None and store.cache_misses == 1
    again = store.get_for_fold("m-0000")
    assert again is not None and again.json == first.json and store.cache_hits == 2
    # Read back as the hot path holds it (its JSON dict), as a model for everyone else.
    assert isinstance(first, HotRecord) and store.get("m-0000") == to_model(first)
    # A write replaces the cached record; a delete removes it (the cache never answers for a
    # record RocksDB does not have).
    model = to_model(first)
    new, _ = fold(model, update_status_factory(TrackingStatus.DELIVERED, "m-0000"))
    assert new is not None
    store.write({"m-0000": (first, new, encode_record(new))}, Position())
    assert store.get("m-0000") == new
    store.write({"m-0000": (new, None, None)}, Position())
    assert store.get("m-0000") is None and store.cache.get("m-0000") is None
    # Whatever the cache holds equals what RocksDB holds.
    for n in range(50):
        cached = store.cache.get(f"m-{n:04d}")
        raw = store.get_raw(f"m-{n:04d}")
        assert cached is None or (raw is not None and cached.json == raw)
    store.close()
    reopened = PartitionStore(tmp_path / "p0.db", cache_size=5)
    assert reopened.get("m-0000") is None and reopened.get("m-0049") == kept
    reopened.close()


def test_the_gc_is_turned_back_on_when_a_batch_raises() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        assert not gc.isenabled()
        raise RuntimeError("a poison batch")
    assert gc.isenabled()


async def test_a_batch_waiting_past_the_limit_turns_the_gc_back_on() -> None:
    assert gc.isenabled()
    with gc_paused(limit_s=0.05):
        assert not gc.isenabled()
        await asyncio.sleep(0.2)  # a publish waiting on a broker that is away
        assert gc.isenabled()
        with gc_paused():  # the fold's synchronous work still pauses it
            assert not gc.isenabled()
        assert gc.isenabled()
    assert gc.isenabled()


def _count_checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The values the store hands to ``load_record`` from now on."""
    from deliverytrack.streams.state import store as store_module

    checked: list[bytes] = []

    def counting_load(value: bytes) -> Any:
        checked.append(value)
        return load_record(value)

    monkeypatch.setattr(store_module, "load_record", counting_load)
    return checked


def test_a_record_the_hot_path_wrote_is_read_back_without_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stored with a tag of this code's hot path: read back as a hot record without
    ``load_record``; everyone else reads its plain JSON. After an upgrade (another models
    digest or version) the tag no longer counts: the record is checked again."""
    from deliverytrack.streams.state import store as store_module

    store = PartitionStore(tmp_path / "p0.db")
    fill(store, 3)
    raw = store.get_raw("m-0001")
    assert raw is not None and raw.startswith(b"{")
    assert [value.startswith(b"{") for _, value in store.iter_raw()] == [True] * 3
    assert all(v is not None and v.startswith(b"{") for v in store.get_many_raw(["m-0001"]))
    checked = _count_checks(monkeypatch)
    record = store.get_for_fold("m-0001")
    assert isinstance(record, HotRecord) and record.json == raw and checked == []
    assert store.get("m-0001") == decode_record(raw)
    store.close()
    monkeypatch.setattr(store_module, "__version__", "99.0")
    reopened = PartitionStore(tmp_path / "p0.db")
    again = reopened.get_for_fold("m-0002")
    assert isinstance(again, HotRecord) and checked == [again.json]
    reopened.close()


def test_an_edited_hot_path_checks_what_it_tagged_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same models digest and version, other source in tables/ or models/ (a developer's tree):
    the tag's epoch moves on as after an upgrade."""
    from deliverytrack.streams.state import store as store_module

    # Readable in a source tree and a wheel, and of some source (not the empty input's hash).
    digest = store_module.hot_source_digest()
    assert len(digest) == 16
    assert digest != hashlib.sha256(b"").hexdigest()[:16]
    checked = _count_checks(monkeypatch)
    store = PartitionStore(tmp_path / "p0.db")
    fill(store, 2)
    store.close()
    reopened = PartitionStore(tmp_path / "p0.db")
    assert isinstance(reopened.get_for_fold("m-0001"), HotRecord) and checked == []
    reopened.close()
    monkeypatch.setattr(store_module, "hot_source_digest", lambda: "edited")
    edited = PartitionStore(tmp_path / "p0.db")
    record = edited.get_for_fold("m-0001")
    assert isinstance(record, HotRecord) and checked == [record.json]
    edited.close()


def test_a_record_only_the_models_hold_is_stored_plain(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0.db")
    record, _ = fold(None, send_recorded_factory("m-0"))
    assert record is not None
    store.write({"m-0": (None, record, encode_record(record))}, Position())
    assert store._db.get(b"rm-0") == encode_record(record)
    store.close()
