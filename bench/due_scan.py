"""Due-scan tick cost: O(records due), not O(records tracked).

Fills a partition's RocksDB store with N tracked records of which 1,000 are due, then times the
timer's work for one tick (``FoldEngine.collect_due_checks``: scan the due index, build the
due-check events; publishing is O(due) too and left out) at N = 10,000 and N = 1,000,000, and
prints the ratio. For contrast it also times what k-msg's memory/object stores do per tick
(iterate every record, decode it, filter by status and nextCheckAt) on the smaller store.

    .venv/bin/python bench/due_scan.py [--small 10000] [--large 1000000] [--due 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from deliverytrack.models.codec import decode_record, encode_record
from deliverytrack.models.enums import MessageType, is_pollable
from deliverytrack.models.events import SendRecorded
from deliverytrack.models.policy import FoldPolicy
from deliverytrack.models.settings import Settings
from deliverytrack.streams.engine.loop import FoldEngine
from deliverytrack.streams.state.store import PartitionStore, Position
from deliverytrack.tables.fold import fold

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
POLICY = FoldPolicy()


def build_store(path: Path, tracked: int, due: int) -> PartitionStore:
    """``due`` records are due before NOW; the rest become due over the next day."""
    store = PartitionStore(path)
    chunk: dict[str, tuple[None, object, bytes]] = {}
    template = None
    for i in range(tracked):
        if i < due:
            requested = NOW - timedelta(seconds=60 + i)
        else:
            requested = NOW + timedelta(seconds=(i * 86_400) // tracked)
        event = SendRecorded(
            event_id=f"send-{i}",
            message_id=f"msg-{i:08d}",
            provider_id="solapi",
            provider_message_id=f"pm-{i}",
            type=MessageType.SMS,
            to="01012345678",
            requested_at=requested,
        )
        record, _ = fold(None, event, POLICY)
        assert record is not None
        template = record
        chunk[record.message_id] = (None, record, encode_record(record))
        if len(chunk) >= 20_000:
            store.write(chunk, Position())  # type: ignore[arg-type]
            chunk = {}
    if chunk:
        store.write(chunk, Position())  # type: ignore[arg-type]
    del template
    return store


def time_tick(engine: FoldEngine, repeats: int) -> tuple[float, int]:
    samples = []
    count = 0
    for _ in range(repeats):
        started = time.perf_counter()
        count = len(engine.timers.timers.collect_due_checks(NOW))
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), count


def full_scan(store: PartitionStore) -> tuple[float, int]:
    started = time.perf_counter()
    due = [
        record
        for _, raw in store.iter_raw()
        if (record := decode_record(raw)).next_check_at is not None
        and is_pollable(record.status)
        and record.next_check_at <= NOW
    ]
    return time.perf_counter() - started, len(due)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"due-scan benchmark: {os.cpu_count()} cores, {args.due} due per store")
    results = {}
    with tempfile.TemporaryDirectory(prefix="dt-due-scan-") as tmp:
        for tracked in (args.small, args.large):
            started = time.perf_counter()
            store = build_store(Path(tmp) / f"s{tracked}.db", tracked, args.due)
            built = time.perf_counter() - started
            engine = FoldEngine(Settings(data_dir=Path(tmp), polling={"batchSize": args.due}))
            engine.partitions.attach(0, store)
            seconds, count = time_tick(engine, args.repeats)
            assert count == args.due, count
            results[tracked] = seconds
            print(
                f"tracked {tracked:>9,}: tick {seconds * 1e3:8.2f} ms for {count} due checks "
                f"(median of {args.repeats}; store built in {built:.0f}s)"
            )
            if tracked == args.small:
                scan_s, scan_due = full_scan(store)
                print(
                    f"tracked {tracked:>9,}: k-msg style full scan {scan_s * 1e3:8.2f} ms "
                    f"for {scan_due} due (decode and filter every record)"
                )
            store.close()
    ratio = results[args.large] / results[args.small]
    growth = args.large / args.small
    print(
        f"tick cost ratio {args.large:,} / {args.small:,} tracked: {ratio:.2f}x "
        f"(tracked records grew {growth:.0f}x)"
    )


if __name__ == "__main__":
    main()
