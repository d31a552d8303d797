"""The engine's fold and RocksDB write on in-memory batches, no Kafka: isolates the CPU cost of
``FoldEngine.batch.fold`` + ``PartitionStore.write`` from the broker and the network.

Same workload as fold_throughput.py (200,000 events over 50,000 keys: sends, then commands), in
20,000-event batches on one partition, with the engine's GC settings (``gc.freeze()``, gen-0
threshold 50,000, collector paused during each batch's synchronous work).

    .venv/bin/python bench/offline_fold.py --record-cache 60000
    .venv/bin/python bench/offline_fold.py --record-cache 0

``--compare`` times the CPU (``time.process_time``, so other processes on the machine inflate it
less than wall time) of the engine's ``batch.fold`` (decode + fold + encode) and of
``PartitionStore.write`` (records, indexes, aggregates) per event, with the hot path off (every
input on the pydantic models: the engine before issue 20) and on (``tables.hot``: hand-checked
dicts and orjson, the models per input where the hot path declines), alternated in one
process, and checks that both wrote the same bytes:

    .venv/bin/python bench/offline_fold.py --compare --rounds 3
    .venv/bin/python bench/offline_fold.py --compare --rounds 3 --record-cache 0   # records read
    .venv/bin/python bench/offline_fold.py --compare --profile hot                  # cProfile
    .venv/bin/python bench/offline_fold.py --compare --profile hot --sampler        # pyinstrument
    .venv/bin/python bench/offline_fold.py --per-type    # one event of each type, warm caches

``--status-changes`` times the same (hot path on) with ``DELIVERYTRACK_STATUS_CHANGE_RECORD``
``full`` and ``changes``, alternated, and prints the status changes' mean size in each:

    .venv/bin/python bench/offline_fold.py --status-changes --rounds 3
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aiokafka.structs import ConsumerRecord  # noqa: E402
from fold_throughput import Workload, generate  # noqa: E402

from deliverytrack.models.settings import Settings  # noqa: E402
from deliverytrack.streams.engine.loop import FoldEngine  # noqa: E402
from deliverytrack.streams.engine.stats import gc_paused  # noqa: E402
from deliverytrack.streams.state.store import PartitionStore, Position  # noqa: E402
from deliverytrack.tables.hot.codec import COMMAND, SEND  # noqa: E402
from deliverytrack.tables.hot.fold import HotFold  # noqa: E402

Batches = list[list[ConsumerRecord[bytes, bytes]]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--record-cache", type=int, default=60_000)
    parser.add_argument("--compare", action="store_true", help="today's path vs the hot path")
    parser.add_argument(
        "--status-changes",
        action="store_true",
        help="status changes with the record (full) vs with its changes, hot path on",
    )
    parser.add_argument("--rounds", type=int, default=3, help="--compare: runs of each, alternated")
    parser.add_argument(
        "--per-type",
        action="store_true",
        help="decode + fold + encode of one event of each type, both paths, warm caches (timeit)",
    )
    parser.add_argument(
        "--profile", choices=("hot", "models"), help="--compare: profile one run of this path"
    )
    parser.add_argument(
        "--sampler",
        action="store_true",
        help="--profile with pyinstrument (sampling, 1 ms; needs pyinstrument) instead of cProfile",
    )
    args = parser.parse_args()
    if args.per_type:
        per_type()
        return
    work = generate(args.events, args.keys)
    if args.compare:
        compare(work, args)
    elif args.status_changes:
        compare_status_changes(work, args)
    else:
        engine_with_write(work, args)


def _batches(engine: FoldEngine, work: Workload, size: int) -> Batches:
    items = [*work.sends, *(item for commands in work.commands for item in commands)]
    topics = [engine.topics.send_results] * len(work.sends)
    topics += [engine.topics.commands] * (len(items) - len(work.sends))
    records = [
        ConsumerRecord(topic, 0, i, i, 0, k, v, None, len(k), len(v), ())
        for i, (topic, (k, v)) in enumerate(zip(topics, items, strict=True))
    ]
    return [records[i : i + size] for i in range(0, len(records), size)]


def _engine(tmp: str, **overrides: Any) -> FoldEngine:
    settings = Settings(app_id="offline", topic_prefix="offline.", data_dir=Path(tmp), **overrides)
    return FoldEngine(settings)


def engine_with_write(work: Workload, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="dt-offline-") as tmp:
        engine = _engine(tmp)
        store = PartitionStore(Path(tmp) / "p0.db", cache_size=args.record_cache)
        engine.partitions.attach(0, store)
        batches = _batches(engine, work, args.batch)
        events = sum(len(b) for b in batches)
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
            f"{events:,} events in {total:.2f}s = {events / total:,.0f} events/s "
            f"(fold {fold_s:.2f}s, write {write_s:.2f}s); record cache {args.record_cache:,}: "
            f"{store.cache_hits:,} hits, {store.cache_misses:,} misses"
        )
        store.close()


# --- --compare ------------------------------------------------------------------------------------


@dataclass
class Run:
    fold_s: float = 0.0
    """CPU seconds of this process in the fold calls (GC paused, as the engine runs them)."""
    write_s: float = 0.0
    """CPU seconds of this process in ``PartitionStore.write`` (records, derived data)."""
    gc_s: float = 0.0
    """CPU seconds in the cyclic GC over the whole run (it collects after the batches what
    they left behind: the records kept, the outputs)."""
    hot: int = 0
    outputs: list[bytes] = field(default_factory=list)
    status_changes: list[int] = field(default_factory=list)
    """The size of each status change published."""


class _GcClock:
    """Times every collection through ``gc.callbacks``."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.process_time()
        else:
            self.run.gc_s += time.process_time() - self.started

    def __enter__(self) -> _GcClock:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def run_engine(
    work: Workload, args: argparse.Namespace, tmp: str, hot: bool, **settings: Any
) -> Run:
    """The engine's ``batch.fold`` with the hot path on or off (``hot``), then
    ``PartitionStore.write`` (it fills the record cache the next batches read, as in the
    engine); both timed, apart."""
    engine = _engine(tmp, **settings)
    engine.batch.hot.enabled = hot
    status_changes = engine.topics.status_changes
    store = PartitionStore(Path(tmp) / "engine.db", cache_size=args.record_cache)
    engine.partitions.attach(0, store)
    run = Run()
    with _GcClock(run):
        for batch in _batches(engine, work, args.batch):
            out: list[Any] = []
            with gc_paused():
                t0 = time.process_time()
                changes = engine.batch.fold(store, batch, out, {})
                t1 = time.process_time()
                store.write(changes, Position())
                run.write_s += time.process_time() - t1
                run.fold_s += t1 - t0
            run.outputs.extend(o.value for o in out)
            run.status_changes.extend(len(o.value) for o in out if o.topic == status_changes)
            run.outputs.extend(raw for _, _, raw in changes.values() if raw is not None)
        store.close()
    run.hot = engine.stats.hot
    return run


def compare(work: Workload, args: argparse.Namespace) -> None:
    events = args.events
    paths: dict[str, Callable[[Workload, argparse.Namespace, str], Run]] = {
        "models": lambda work, args, tmp: run_engine(work, args, tmp, hot=False),
        "hot": lambda work, args, tmp: run_engine(work, args, tmp, hot=True),
    }
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    if args.profile and args.sampler:
        from pyinstrument import Profiler

        sampler = Profiler(interval=0.001)
        with tempfile.TemporaryDirectory(prefix="dt-offline-") as tmp:
            sampler.start()
            paths[args.profile](work, args, tmp)
            sampler.stop()
        print(sampler.output_text(unicode=False, color=False))
        return
    if args.profile:
        with tempfile.TemporaryDirectory(prefix="dt-offline-") as tmp:
            profiler = cProfile.Profile()
            profiler.enable()
            paths[args.profile](work, args, tmp)
            profiler.disable()
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(25)
        return
    fold: dict[str, list[float]] = {name: [] for name in paths}
    write: dict[str, list[float]] = {name: [] for name in paths}
    collect: dict[str, list[float]] = {name: [] for name in paths}
    reference: list[bytes] | None = None
    for round_ in range(args.rounds):
        for name, path in paths.items():
            with tempfile.TemporaryDirectory(prefix="dt-offline-") as tmp:
                run = path(work, args, tmp)
            if reference is None:
                reference = run.outputs
            elif run.outputs != reference:
                raise SystemExit(f"{name} wrote other bytes than the models (round {round_ + 1})")
            fold[name].append(run.fold_s / events * 1e6)
            write[name].append(run.write_s / events * 1e6)
            collect[name].append(run.gc_s / events * 1e6)
            hot = f", {run.hot:,} inputs on the hot path" if name == "hot" else ""
            print(
                f"round {round_ + 1} {name:6}: fold {fold[name][-1]:6.2f} µs/event CPU, "
                f"write {write[name][-1]:6.2f}, GC {collect[name][-1]:5.2f}{hot}",
                flush=True,
            )

    def line(name: str, label: str) -> str:
        runs = " / ".join(f"{t:.2f}" for t in fold[name])
        return (
            f"  {label:34} {statistics.median(fold[name]):6.2f} µs/event ({runs}); "
            f"write {statistics.median(write[name]):.2f}; GC {statistics.median(collect[name]):.2f}"
        )

    ratio = statistics.median(fold["models"]) / statistics.median(fold["hot"])
    both = [statistics.median(fold[name]) + statistics.median(write[name]) for name in paths]
    print(
        f"\nCPU of decode + fold + encode, {events:,} events, record cache "
        f"{args.record_cache:,}, median of {args.rounds}:\n"
        f"{line('models', 'engine, hot path off (models):')}\n"
        f"{line('hot', 'engine, hot path on:')}\n"
        f"  ratio models / hot: fold {ratio:.2f}x, fold + write {both[0] / both[1]:.2f}x; "
        "outputs and records byte-identical"
    )


def compare_status_changes(work: Workload, args: argparse.Namespace) -> None:
    """The engine (hot path on) publishing status changes with the record and with its
    changes, alternated: CPU per event and the status changes' size."""
    events = args.events
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    modes = ("full", "changes")
    fold: dict[str, list[float]] = {mode: [] for mode in modes}
    write: dict[str, list[float]] = {mode: [] for mode in modes}
    sizes: dict[str, list[int]] = {}
    records: dict[str, list[bytes]] = {}
    for round_ in range(args.rounds):
        for mode in modes:
            with tempfile.TemporaryDirectory(prefix="dt-offline-") as tmp:
                run = run_engine(work, args, tmp, hot=True, status_change_record=mode)
            fold[mode].append(run.fold_s / events * 1e6)
            write[mode].append(run.write_s / events * 1e6)
            sizes[mode] = run.status_changes
            records.setdefault(mode, [o for o in run.outputs if o.startswith(b'{"messageId"')])
            print(
                f"round {round_ + 1} {mode:7}: fold {fold[mode][-1]:6.2f} µs/event CPU, "
                f"write {write[mode][-1]:6.2f}, {run.hot:,} inputs on the hot path",
                flush=True,
            )
    print(
        f"\nCPU of decode + fold + encode, {events:,} events, record cache "
        f"{args.record_cache:,}, median of {args.rounds}:"
    )
    for mode in modes:
        runs = " / ".join(f"{t:.2f}" for t in fold[mode])
        count, total = len(sizes[mode]), sum(sizes[mode])
        print(
            f"  {mode:8} fold {statistics.median(fold[mode]):6.2f} µs/event ({runs}); write "
            f"{statistics.median(write[mode]):.2f}; {count:,} status changes, mean "
            f"{total / max(1, count):,.0f} B (median {statistics.median(sizes[mode]):,.0f}), "
            f"{total / 1e6:.1f} MB"
        )
    same = "the same" if records["full"] == records["changes"] else "NOT the same"
    print(f"  records written: {same} in both modes")


def per_type(repeats: int = 9, number: int = 5_000) -> None:
    """One event of each kind in the workload, each path on its own record (warm caches): the
    floor of the per-event cost, without the cache misses of 200,000 events."""
    from deliverytrack.models.codec import (
        decode_command,
        decode_send_result,
        encode_record,
        encode_status_changed,
    )
    from deliverytrack.models.events import StatusChanged
    from deliverytrack.tables.deletion import fold_marked

    policy = Settings().fold_policy
    hot = HotFold(policy)
    work = generate(400, 100)
    send, delivered, clicked, refused = (
        work.sends[0][1],
        *(value for _, value in work.commands[0][:3]),
    )

    def today(record: Any, decode: Callable[[bytes], Any], raw: bytes) -> Any:
        new, _, emitted = fold_marked(record, None, decode(raw), policy)
        for out in emitted:
            if isinstance(out, StatusChanged):
                encode_status_changed(out, encode_record(out.record))
        return new

    def hot_path(record: Any, kind: str, raw: bytes) -> Any:
        event = hot.decode(kind, raw)
        assert event is not None
        step = hot.fold(record, kind, event)
        assert step is not None
        return step.record

    models = [None]
    hots = [None]
    for decode, kind, raw in (
        (decode_send_result, SEND, send),
        (decode_command, COMMAND, delivered),
        (decode_command, COMMAND, clicked),
    ):
        models.append(today(models[-1], decode, raw))
        hots.append(hot_path(hots[-1], kind, raw))
    cases = {
        "send result -> SENT": (0, decode_send_result, SEND, send),
        "UpdateStatus -> DELIVERED": (1, decode_command, COMMAND, delivered),
        "UpdateStatus -> CLICKED": (2, decode_command, COMMAND, clicked),
        "UpdateStatus refused": (3, decode_command, COMMAND, refused),
    }
    best: dict[str, list[float]] = {name: [float("inf"), float("inf")] for name in cases}
    for _ in range(repeats):
        for name, (at, decode, kind, raw) in cases.items():
            for side, call in enumerate(
                (
                    lambda: today(models[at], decode, raw),  # noqa: B023 - called at once
                    lambda: hot_path(hots[at], kind, raw),  # noqa: B023
                )
            ):
                seconds = timeit.timeit(call, number=number) / number * 1e6
                best[name][side] = min(best[name][side], seconds)
    print(f"decode + fold + encode, µs per event, best of {repeats} x {number:,}:")
    for name, (pydantic_us, hot_us) in best.items():
        ratio = pydantic_us / hot_us
        print(f"  {name:28} today {pydantic_us:6.2f}   hot {hot_us:6.2f}   {ratio:.2f}x")
    mean = [sum(best[n][side] for n in best) / len(best) for side in (0, 1)]
    print(
        f"  {'mean (the workload mix)':28} today {mean[0]:6.2f}   hot {mean[1]:6.2f}   "
        f"{mean[0] / mean[1]:.2f}x"
    )


if __name__ == "__main__":
    main()
