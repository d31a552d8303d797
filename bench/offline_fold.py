"""The engine's fold and RocksDB write on in-memory batches, no Kafka: isolates the CPU cost of
``FoldEngine.batch.fold`` + ``PartitionStore.write`` from the broker and the network.

Same workload as fold_throughput.py (200,000 events over 50,000 keys: sends, then commands), in
20,000-event batches on one partition, with the engine's GC settings (``gc.freeze()``, gen-0
threshold 50,000, collector paused during each batch's synchronous work).

    .venv/bin/python bench/offline_fold.py --record-cache 60000
    .venv/bin/python bench/offline_fold.py --record-cache 0
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aiokafka.structs import ConsumerRecord  # noqa: E402
from fold_throughput import generate  # noqa: E402

from deliverytrack.models.settings import Settings  # noqa: E402
from deliverytrack.streams.engine.loop import FoldEngine  # noqa: E402
from deliverytrack.streams.engine.stats import gc_paused  # noqa: E402
from deliverytrack.streams.state.store import PartitionStore, Position  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--record-cache", type=int, default=60_000)
    args = parser.parse_args()
    work = generate(args.events, args.keys)
    with tempfile.TemporaryDirectory(prefix="dt-offline-") as tmp:
        settings = Settings(app_id="offline", topic_prefix="offline.", data_dir=Path(tmp))
        engine = FoldEngine(settings)
        store = PartitionStore(Path(tmp) / "p0.db", cache_size=args.record_cache)
        engine.partitions.attach(0, store)
        items = [*work.sends, *(item for commands in work.commands for item in commands)]
        topics = [engine.topics.send_results] * len(work.sends)
        topics += [engine.topics.commands] * (len(items) - len(work.sends))
        records = [
            ConsumerRecord(topic, 0, i, i, 0, k, v, None, len(k), len(v), ())
            for i, (topic, (k, v)) in enumerate(zip(topics, items, strict=True))
        ]
        batches = [records[i : i + args.batch] for i in range(0, len(records), args.batch)]
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        fold_s = write_s = 0.0
        started = time.perf_counter()
        for batch in batches:
            t0 = time.perf_counter()
            with gc_paused():
                changes = engine.batch.fold(engine.store(0), batch, [], {})
            t1 = time.perf_counter()
            with gc_paused():
                store.write(changes, Position())
            fold_s += t1 - t0
            write_s += time.perf_counter() - t1
        total = time.perf_counter() - started
        print(
            f"{len(records):,} events in {total:.2f}s = {len(records) / total:,.0f} events/s "
            f"(fold {fold_s:.2f}s, write {write_s:.2f}s); record cache {args.record_cache:,}: "
            f"{store.cache_hits:,} hits, {store.cache_misses:,} misses"
        )
        store.close()


if __name__ == "__main__":
    main()
