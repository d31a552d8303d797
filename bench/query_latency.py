"""Query latency over 1,000,000 records: count, count-by and stats answered from the fold's
aggregates vs the same answers computed by scanning every record.

No Kafka: records are written to real partition stores (RocksDB, 4 partitions) through
``PartitionStore.write``, the same call the fold engine makes, so the aggregates and indexes
are the ones a worker keeps. The queries then run through ``streams.query.LocalQueries``, the
code that serves ``/records/count``, ``/records/count-by`` and ``/stats`` on each worker.

    .venv/bin/python bench/query_latency.py                 # 1,000,000 records
    .venv/bin/python bench/query_latency.py --records 100000 --scan-sample 1
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from deliverytrack.models.codec import encode_record
from deliverytrack.models.enums import MessageType, StatusSource, TrackingStatus
from deliverytrack.models.records import StatusHistoryEntry, TrackingRecord
from deliverytrack.streams.query.service import LocalQueries, Rows
from deliverytrack.streams.state.store import PartitionStore, Position
from deliverytrack.tables.aggregates import Counter, contribution
from deliverytrack.tables.query import RecordFilter, matches, stats

T0 = datetime(2026, 11, 1, tzinfo=UTC)
PROVIDERS = ("solapi", "iwinv", "aligo", "sim")
TYPES = (MessageType.SMS, MessageType.LMS, MessageType.ALIMTALK, MessageType.FRIENDTALK)
STATUSES = (
    TrackingStatus.DELIVERED,
    TrackingStatus.DELIVERED,
    TrackingStatus.DELIVERED,
    TrackingStatus.FAILED,
    TrackingStatus.SENT,
    TrackingStatus.UNKNOWN,
)


def make_record(i: int, rng: random.Random) -> TrackingRecord:
    requested = T0 + timedelta(seconds=rng.uniform(0, 30 * 86_400))
    status = STATUSES[i % len(STATUSES)]
    sent = requested + timedelta(seconds=1)
    delivered = (
        sent + timedelta(seconds=rng.uniform(1, 60)) if status is TrackingStatus.DELIVERED else None
    )
    entry = StatusHistoryEntry.model_construct(
        status=status, at=sent, source=StatusSource.PROVIDER, provider=None, details=None,
        event_id=f"e{i}",
    )  # fmt: skip
    return TrackingRecord.model_construct(
        message_id=f"m-{i:08d}",
        provider_id=PROVIDERS[i % 4],
        provider_message_id=f"pm-{i}",
        type=TYPES[(i // 4) % 4],
        to="01012345678",
        requested_at=requested,
        status=status,
        status_updated_at=delivered or sent,
        sent_at=sent,
        delivered_at=delivered,
        status_history=(entry,),
        sequence=1,
        processed_event_ids=(f"e{i}",),
    )


def load(stores: list[PartitionStore], n: int) -> float:
    rng = random.Random(20261204)
    started = time.perf_counter()
    batches: list[dict[str, Any]] = [{} for _ in stores]
    for i in range(n):
        record = make_record(i, rng)
        batch = batches[i % len(stores)]
        batch[record.message_id] = (None, record, encode_record(record))
        if len(batch) >= 20_000:
            stores[i % len(stores)].write(batch, Position())
            batch.clear()
    for store, batch in zip(stores, batches, strict=True):
        if batch:
            store.write(batch, Position())
    return time.perf_counter() - started


async def aggregated(local: LocalQueries, partitions: list[int], flt: RecordFilter) -> Rows:
    out: Rows = {}
    for p in partitions:
        for dims, counter in (await local.rows(p, flt)).items():
            out.setdefault(dims, Counter()).add(counter)
    return out


def scanned(stores: list[PartitionStore], flt: RecordFilter) -> Rows:
    out: Rows = {}
    for store in stores:
        for record in store.records():
            if matches(record, flt):
                item = contribution(record)
                out.setdefault(item.dims, Counter()).add(item.counter)
    return out


def timed(fn: Any, repeat: int) -> tuple[float, Any]:
    samples, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scan-sample", type=int, default=1, help="scan timings to take")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dt-query-bench-"))
    stores = [PartitionStore(work / f"p{p}.db") for p in range(args.partitions)]
    try:
        print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; records: {args.records:,}; "
              f"partitions: {args.partitions}")  # fmt: skip
        print(f"load (fold-side writes incl. aggregates): {load(stores, args.records):.1f}s")
        local = LocalQueries(dict(enumerate(stores)), set(range(args.partitions)))
        partitions = list(range(args.partitions))
        period_from = T0 + timedelta(days=3, hours=5, minutes=7, seconds=13, milliseconds=250)
        period_to = T0 + timedelta(days=17, hours=20, minutes=41, seconds=59)
        queries = {
            "count (all)": RecordFilter(),
            "count providerId=solapi,iwinv status=FAILED": RecordFilter(
                provider_id=("solapi", "iwinv"), status=(TrackingStatus.FAILED,)
            ),
            "count-by / stats (all)": RecordFilter(),
            "stats for a period (unaligned bounds, 14.6 days)": RecordFilter(
                requested_at_from=period_from, requested_at_to=period_to
            ),
        }
        loop = asyncio.new_event_loop()
        print(f"\n{'query':<52} {'aggregates':>12} {'full scan':>12} {'ratio':>8}")
        for name, flt in queries.items():
            fast_s, fast = timed(
                lambda flt=flt: loop.run_until_complete(aggregated(local, partitions, flt)),
                args.repeat,
            )
            slow_s, slow = timed(lambda flt=flt: scanned(stores, flt), args.scan_sample)
            assert stats(fast) == stats(slow), name  # same answer both ways
            print(f"{name:<52} {fast_s * 1000:>10.2f}ms {slow_s:>11.2f}s {slow_s / fast_s:>7.0f}x")
        loop.close()
    finally:
        for store in stores:
            store.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
