"""What bounds a worker's memory (streams/state/memory.py): the partition stores share one RocksDB
budget (memtables charged to one block cache), the C heap is trimmed after work freed memory
(at most once per interval), and /health says what the worker holds. The numbers are in
bench/README.md (bench/worker_memory.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from deliverytrack.models.codec import encode_record
from deliverytrack.models.settings import Settings
from deliverytrack.streams.engine.loop import FoldEngine
from deliverytrack.streams.state import memory
from deliverytrack.streams.state.memory import HeapTrimmer, RocksMemory, rss_bytes, tune_heap
from deliverytrack.streams.state.store import PartitionStore, Position
from deliverytrack.tables.fold import fold
from tests.factories import send_recorded_factory

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc heap controls")


def test_stores_share_one_bounded_rocksdb_budget(tmp_path: Path) -> None:
    rocks = RocksMemory(budget_mb=8)
    assert rocks.write_buffer_size == 1 * 2**20  # an eighth of the budget, at least 1 MiB
    stores = [PartitionStore(tmp_path / f"p{p}.db", memory=rocks) for p in range(4)]
    try:
        for n in range(2_000):
            record, _ = fold(None, send_recorded_factory(f"m-{n}", metadata={"pad": "x" * 2_000}))
            assert record is not None
            store = stores[n % 4]
            store.write({record.message_id: (None, record, encode_record(record))}, Position())
        usage = rocks.usage()
        assert usage["budgetBytes"] == 8 * 2**20
        # Memtables of the four stores together, charged to the one cache, within the budget.
        assert 0 < usage["memtableBytes"] <= 4 * 2**20 + 2**20
        assert usage["blockCacheBytes"] <= usage["budgetBytes"] + 2**20
        assert stores[0].get("m-0") is not None  # still reads what it wrote
    finally:
        for store in stores:
            store.close()


@linux
def test_the_heap_is_trimmed_after_work_at_most_once_per_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    class Libc:
        def malloc_trim(self, pad: int) -> int:
            calls.append(pad)
            return 1

    monkeypatch.setattr(memory, "_LIBC", Libc())
    trimmer = HeapTrimmer(interval_s=3600)
    trimmer.maybe_trim()
    assert calls == []  # nothing freed yet
    trimmer.freed()
    trimmer.maybe_trim()
    trimmer.freed()
    trimmer.maybe_trim()  # within the interval
    assert calls == [0] and trimmer.trims == 1


@linux
def test_heap_settings_and_rss_on_linux() -> None:
    assert tune_heap() is True
    assert 10 * 2**20 < rss_bytes() < 10 * 2**30


def test_health_says_what_the_worker_holds(tmp_path: Path) -> None:
    engine = FoldEngine(Settings(data_dir=tmp_path, record_cache_size=123, rocksdb_memory_mb=16))
    held = engine.memory()
    assert held["recordCacheRecords"] == 0 and held["recordCacheLimit"] == 123
    assert held["rocksdb"]["budgetBytes"] == 16 * 2**20
    assert held["rssBytes"] > 0 and held["heapTrims"] == 0
