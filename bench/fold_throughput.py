"""Fold throughput: deliverytrack's FoldEngine vs a stock Faust agent vs a raw aiokafka loop.

Usage::

    .venv/bin/python bench/fold_throughput.py [--events 200000] [--keys 50000] [--partitions 4]
        [--runs 1] [--faust-events 50000] [--broker kafka://host:port]
        [--input phased|backlog|both] [--only engine,faust,raw,io,io-ck] [--baseline REV]
        [--engine-in-child] [--ck-reports all|errors]
        [--profile cprofile|pyinstrument] [--profile-out PATH] [--keep]

The workload is generated once (seeded): per messageId one SendRecorded on send-results and
UpdateStatus commands (DELIVERED, CLICKED, then refused updates with fresh eventIds). It is
produced before any timed window; every contender reads it with its own consumer group and
fresh state, and is timed from the first event it processes to the last event applied.

Input modes:

``phased`` (default)
    The sends are loaded, the contender folds them (window 1); its commands partitions are
    then paused, the commands loaded, the partitions resumed and folded (window 2). Time is
    the sum of the two windows; every command finds its record.
``backlog``
    Both topics are loaded before the contender starts (one window). Shows how a contender
    behaves when catching up on a backlog spread over two topics: commands fetched before
    their SendRecorded are rejected as unknown-message (dead letters in the engine).

``--baseline REV`` adds the contender ``baseline``: the engine contender run on the
``deliverytrack`` package of another commit (its tree extracted with ``git archive`` into a temp
dir, imported by a child process), on the same broker, workload and input mode; the table is
followed by the ratio engine / baseline of the median events/s. ``--engine-in-child`` runs
today's engine in the same kind of child process (else it runs in this one).

The engine contender's ``Settings`` read ``DELIVERYTRACK_*`` from the environment (e.g.
``DELIVERYTRACK_STATUS_CHANGE_RECORD=changes``), all but the broker, app id, topic prefix, data
dir and partitions, which are the harness's; it prints the settings it ran with and the count
and mean size of the status changes it published.

``--only io-ck`` runs the Kafka I/O floor with confluent-kafka (librdkafka) instead of aiokafka;
it needs the ``bench`` extra (``pip install -e '.[bench]'``) and is skipped with a note without it.

See bench/README.md for what each contender does and the numbers measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import gc
import io
import logging
import os
import platform
import pstats
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord, TopicPartition

# The project is not pip-installed: run from a checkout, importable from the repository root.
ROOT = Path(__file__).resolve().parents[1]
BASELINE_TREE_ENV = "DT_BENCH_BASELINE_TREE"
# The --baseline child must import the other commit's package (its tree is first on PYTHONPATH),
# never this checkout's: it does not put ROOT on sys.path.
BASELINE_CHILD = "--baseline-child" in sys.argv[1:] and BASELINE_TREE_ENV in os.environ
if not BASELINE_CHILD and str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deliverytrack.models.codec import (  # noqa: E402
    decode_command,
    decode_record,
    decode_send_result,
    encode,
    encode_record,
    encode_status_changed,
)
from deliverytrack.models.enums import MessageType, StatusSource, TrackingStatus  # noqa: E402
from deliverytrack.models.events import (  # noqa: E402
    EventRejected,
    ProviderIdLinked,
    SendRecorded,
    StatusChanged,
    UpdateStatus,
    provider_key,
)
from deliverytrack.models.records import TrackingRecord  # noqa: E402
from deliverytrack.models.settings import Settings  # noqa: E402
from deliverytrack.streams.engine.loop import FoldEngine  # noqa: E402
from deliverytrack.streams.kafka.partitioner import partition_for  # noqa: E402
from deliverytrack.streams.state.store import PartitionStore  # noqa: E402
from deliverytrack.streams.topics import Topics  # noqa: E402
from deliverytrack.tables.fold import fold  # noqa: E402
from deliverytrack.tables.hot.codec import COMMAND, SEND, HotRecord  # noqa: E402
from deliverytrack.tables.hot.fold import HotOutput  # noqa: E402

SEED = 20261123
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
RESULT_MARKER = "BENCH_RESULT "
PHASE_MARKER = "BENCH_PHASE "
ERROR_MARKER = "BENCH_ERROR "
log = logging.getLogger("bench")

Item = tuple[bytes, bytes]


# --- workload ------------------------------------------------------------------------------


@dataclass(slots=True)
class Workload:
    """Per key (in key order): its SendRecorded and its UpdateStatus commands, encoded."""

    sends: list[Item]
    commands: list[list[Item]]

    @property
    def keys(self) -> int:
        return len(self.sends)

    @property
    def events(self) -> int:
        return self.keys + sum(len(c) for c in self.commands)

    def subset(self, events: int) -> Workload:
        """The first keys of this workload holding about ``events`` events (same mix)."""
        if events >= self.events:
            return self
        total = 0
        for index, commands in enumerate(self.commands):
            total += 1 + len(commands)
            if total >= events:
                return Workload(self.sends[: index + 1], self.commands[: index + 1])
        return self

    def value_sizes(self) -> tuple[float, float]:
        sends = statistics.fmean(len(v) for _, v in self.sends)
        cmds = [len(v) for c in self.commands for _, v in c]
        return sends, statistics.fmean(cmds) if cmds else 0.0

    def expected(self) -> Counter[str]:
        """What a correct fold does with it (each key: send, DELIVERED, CLICKED, refused...)."""
        out: Counter[str] = Counter()
        for commands in self.commands:
            out["applied"] += 1 + min(len(commands), 2)
            out["refused"] += max(len(commands) - 2, 0)
        return out


def generate(events: int, keys: int, seed: int = SEED) -> Workload:
    """N events over K messageIds, deterministic for a seed.

    Per key: one SendRecorded (record becomes SENT), then UpdateStatus DELIVERED, CLICKED, and
    for any further events refused updates with fresh eventIds (alternately DELIVERED again and
    SENT: CLICKED is final), so each is a real read + fold that changes nothing.
    """
    if keys < 1 or events < keys:
        raise SystemExit("need --keys >= 1 and --events >= --keys (one SendRecorded per key)")
    rng = random.Random(seed)
    base, extra = divmod(events, keys)
    types = (MessageType.SMS, MessageType.LMS, MessageType.ALIMTALK)
    carriers = ("SKT", "KT", "LGU+")
    sends: list[Item] = []
    all_commands: list[list[Item]] = []
    for i in range(keys):
        count = base + (1 if i < extra else 0)
        tag = f"{rng.getrandbits(32):08x}"
        message_id = f"m-{i:08d}-{tag}"
        key = message_id.encode()
        requested = T0 + timedelta(milliseconds=7 * i)
        send = SendRecorded(
            event_id=f"s-{i:08d}-{tag}",
            message_id=message_id,
            provider_id="solapi",
            provider_message_id=f"pm-{tag}{rng.getrandbits(32):08x}",
            type=rng.choice(types),
            to=f"010{rng.randrange(10**8):08d}",
            from_="0212345678",
            requested_at=requested,
            recorded_at=requested + timedelta(milliseconds=rng.randrange(20, 400)),
            metadata={"tenant": f"t-{rng.randrange(100):03d}", "campaign": f"c{rng.randrange(99)}"},
        )
        sends.append((key, encode(send)))
        commands: list[Item] = []
        for j in range(count - 1):
            if j < 2:
                status = (TrackingStatus.DELIVERED, TrackingStatus.CLICKED)[j]
            else:
                status = TrackingStatus.DELIVERED if j % 2 == 0 else TrackingStatus.SENT
            at = requested + timedelta(seconds=5 * (j + 1), milliseconds=rng.randrange(1000))
            update = UpdateStatus(
                event_id=f"u-{i:08d}-{j}-{rng.getrandbits(32):08x}",
                message_id=message_id,
                status=status,
                at=at,
                source=StatusSource.PROVIDER,
                provider="solapi",
                provider_status_code=f"{rng.randrange(3000, 5000)}",
                provider_status_message=f"{status.value.lower()} report",
                delivered_at=at if status == TrackingStatus.DELIVERED else None,
                clicked_at=at if status == TrackingStatus.CLICKED else None,
                details={"carrier": rng.choice(carriers), "reportId": f"r-{tag}-{j}"},
            )
            commands.append((key, encode(update)))
        all_commands.append(commands)
    return Workload(sends, all_commands)


# --- Kafka helpers ---------------------------------------------------------------------------


def servers_of(broker_url: str) -> list[str]:
    return [part for part in broker_url.removeprefix("kafka://").split(";") if part]


async def create_topics(servers: list[str], names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, client_id="bench-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, partitions, 1) for n in names if n not in existing]
        if missing:
            await admin.create_topics(missing)
    finally:
        await admin.close()


async def produce(servers: list[str], topic: str, items: list[Item]) -> float:
    """Produce keyed values fast (per-partition BatchBuilders, acks=1); returns seconds."""
    started = time.perf_counter()
    producer = AIOKafkaProducer(
        bootstrap_servers=servers,
        client_id="bench-loader",
        acks=1,
        linger_ms=50,
        max_batch_size=1_048_576,
        max_request_size=4_194_304,
    )
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        by_partition: dict[int, list[Item]] = defaultdict(list)
        for key, value in items:
            by_partition[partition_for(key, partitions)].append((key, value))

        async def send_partition(partition: int, rows: list[Item]) -> None:
            futures = []
            batch = producer.create_batch()
            for key, value in rows:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            await asyncio.gather(*futures)

        await asyncio.gather(*(send_partition(p, rows) for p, rows in by_partition.items()))
    finally:
        await producer.stop()
    return time.perf_counter() - started


# --- feeding: backlog or phased --------------------------------------------------------------


@dataclass(slots=True)
class Feed:
    """A contender's input topics and how the workload gets onto them.

    ``backlog``: both topics are loaded before the contender starts; one timed window.
    ``phased``: the SendRecorded topic is loaded before the contender starts; once it has folded
    all of them (window 1 closes) the contender's commands partitions are paused, the commands
    are loaded, the partitions resumed (window 2 opens at the next batch). Production is never
    inside a timed window, and every command finds its record (no cross-topic races).
    """

    servers: list[str]
    send_topic: str
    commands_topic: str
    work: Workload
    phased: bool
    load_log: list[str] = field(default_factory=list)

    @property
    def targets(self) -> list[int]:
        return [self.work.keys, self.work.events] if self.phased else [self.work.events]

    async def prepare(self, partitions: int) -> None:
        """Phased: fresh topics, SendRecorded loaded. Backlog: already loaded (shared)."""
        if self.phased:
            await create_topics(self.servers, [self.send_topic, self.commands_topic], partitions)
            seconds = await produce(self.servers, self.send_topic, self.work.sends)
            self.load_log.append(f"{self.work.keys:,} sends loaded in {seconds:.1f}s")

    async def load_commands(self) -> None:
        commands = [item for per_key in self.work.commands for item in per_key]
        seconds = await produce(self.servers, self.commands_topic, commands)
        self.load_log.append(f"{len(commands):,} commands loaded in {seconds:.1f}s (untimed)")


async def load_backlog(feed: Feed, partitions: int) -> str:
    """Sends first, then commands key by key, all before any contender starts."""
    await create_topics(feed.servers, [feed.send_topic, feed.commands_topic], partitions)
    t_send = await produce(feed.servers, feed.send_topic, feed.work.sends)
    commands = [item for per_key in feed.work.commands for item in per_key]
    t_cmd = await produce(feed.servers, feed.commands_topic, commands)
    return (
        f"{feed.work.keys:,} -> {feed.send_topic} in {t_send:.1f}s, "
        f"{len(commands):,} -> {feed.commands_topic} in {t_cmd:.1f}s"
    )


BROKER_PID: list[int] = []
"""The local broker's JVM pid (empty for an external broker), for CPU accounting."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 if unknown)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class GcClock:
    """Wall time spent in the cyclic garbage collector, per generation (gc.callbacks)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            self.seconds[generation] += time.perf_counter() - self._started
            self.count[generation] += 1

    def snapshot(self) -> tuple[float, int, int]:
        return sum(self.seconds), sum(self.count), self.count[2]


GC_CLOCK = GcClock()
gc.callbacks.append(GC_CLOCK)


THREAD_OWNERS: dict[str, str] = {}
"""Thread id -> which client started it (librdkafka names every client's threads alike)."""


def thread_ids() -> set[str]:
    with contextlib.suppress(OSError):
        return set(os.listdir("/proc/self/task"))
    return set()


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far of this process's live threads, by thread name (``/proc``; e.g.
    librdkafka's ``rdk:main``, ``rdk:broker1``, prefixed by ``THREAD_OWNERS``; Python's threads
    all show the program's name)."""
    out: dict[str, float] = defaultdict(float)
    ticks = os.sysconf("SC_CLK_TCK")
    for tid in thread_ids():
        with contextlib.suppress(OSError, IndexError, ValueError):
            head, _, tail = Path(f"/proc/self/task/{tid}/stat").read_text().rpartition(")")
            fields = tail.split()
            name = head.split("(", 1)[1]
            if tid in THREAD_OWNERS:
                name = f"{THREAD_OWNERS[tid]} {name}"
            out[name] += (int(fields[11]) + int(fields[12])) / ticks
    return out


def _cpu_now() -> tuple[float, float, float, float]:
    """This process's CPU seconds, the broker's, and the machine's stolen and total CPU
    seconds (``/proc/stat``: time the hypervisor gave these CPUs to someone else)."""
    broker = cpu_seconds(BROKER_PID[0]) if BROKER_PID else 0.0
    return time.process_time(), broker, *_host_steal()


def _host_steal() -> tuple[float, float]:
    try:
        with open("/proc/stat", "rb") as stat:
            fields = [int(x) for x in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return fields[7] / tick, sum(fields) / tick


class Windows:
    """Timed windows: one opens when a batch arrives while none is open, and closes when the
    processed count reaches the next target (after that batch's state is written). Also
    accounts the CPU time this process and the broker JVM used inside the windows."""

    def __init__(self, targets: list[int], profiler: Profiler | None = None) -> None:
        self.targets = targets
        self.profiler = profiler
        self.index = 0
        self.opened_at: float | None = None
        self.spans: list[float] = []
        self.reached = [asyncio.Event() for _ in targets]
        self._cpu_at = (0.0, 0.0, 0.0, 0.0)
        self.cpu = [0.0, 0.0, 0.0, 0.0]
        """In the windows: this process, the broker, the host's stolen and total CPU seconds."""
        self._gc_at = (0.0, 0, 0)
        self.gc = [0.0, 0, 0]
        self._threads_at: dict[str, float] = {}
        self.threads: dict[str, float] = defaultdict(float)
        """CPU seconds in the windows by thread name (threads that ended in a window and
        ticks of 10 ms: approximate)."""

    def cpu_share(self) -> str:
        seconds = self.seconds or 1.0
        own, broker = (100 * value / seconds for value in self.cpu[:2])
        text = f"this process {own:.0f}% of one core"
        text += f", broker JVM {broker:.0f}%" if BROKER_PID else ""
        stolen, total = self.cpu[2:]
        if total:  # a share above a few % means the host, not this run, set the pace
            text += f", host steal {100 * stolen / total:.1f}% of the CPUs' time"
        gc_seconds, collections, full = self.gc
        return text + (
            f"; gc {gc_seconds:.2f}s ({100 * gc_seconds / seconds:.0f}%) in {collections} "
            f"collections, {full} of them full"
        )

    def cpu_per_event(self, events: int) -> dict[str, float]:
        """CPU microseconds per event inside the windows: this process (every thread, e.g.
        librdkafka's: ``time.process_time``) and the broker JVM (``/proc/<pid>/stat``)."""
        own, broker = (round(1e6 * value / max(events, 1), 1) for value in self.cpu[:2])
        return {"this_process_us": own, **({"broker_us": broker} if BROKER_PID else {})}

    def thread_cpu_per_event(self, events: int) -> dict[str, float]:
        """``threads`` in CPU microseconds per event, busiest first."""
        busiest = sorted(self.threads.items(), key=lambda item: -item[1])
        per = 1e6 / max(events, 1)
        return {name: round(per * seconds, 1) for name, seconds in busiest if seconds > 0}

    @property
    def done(self) -> bool:
        return self.index >= len(self.targets)

    @property
    def seconds(self) -> float:
        return sum(self.spans)

    def batch_arrived(self) -> None:
        if self.opened_at is None and not self.done:
            self.opened_at = time.perf_counter()
            self._cpu_at = _cpu_now()
            self._gc_at = GC_CLOCK.snapshot()
            self._threads_at = thread_cpu()
            if self.profiler is not None:
                self.profiler.resume()

    def batch_done(self, processed: int) -> None:
        now = time.perf_counter()
        while not self.done and processed >= self.targets[self.index]:
            if self.opened_at is not None:
                self.spans.append(now - self.opened_at)
                for slot, (then, current) in enumerate(zip(self._cpu_at, _cpu_now(), strict=True)):
                    self.cpu[slot] += current - then
                for slot, (then, current) in enumerate(
                    zip(self._gc_at, GC_CLOCK.snapshot(), strict=True)
                ):
                    self.gc[slot] += current - then
                for name, seconds in thread_cpu().items():
                    self.threads[name] += seconds - self._threads_at.get(name, 0.0)
                if self.profiler is not None:
                    self.profiler.pause()
            self.opened_at = None
            self.reached[self.index].set()
            self.index += 1


async def drive(
    windows: Windows,
    feed: Feed,
    pause: Callable[[], None],
    resume: Callable[[], None],
    timeout: float,
    progress: Callable[[], int],
) -> tuple[bool, str]:
    """Wait for each window; between windows (phased) load the commands while paused."""
    deadline = time.monotonic() + timeout
    for index, event in enumerate(windows.reached):
        try:
            await asyncio.wait_for(event.wait(), max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            return False, f"timed out after {timeout:.0f}s at {progress():,} events"
        if index + 1 < len(windows.reached):
            pause()
            await feed.load_commands()
            resume()
    return True, ""


# --- results ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    contender: str
    mode: str
    events: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    ok: bool = True
    note: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class LogCounter(logging.Handler):
    """Counts log records by level and keeps the first WARNING+ messages per logger."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.levels: Counter[str] = Counter()
        self.samples: dict[str, list[str]] = defaultdict(list)
        self.interesting: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.levels[record.levelname] += 1
        message = record.getMessage()
        for word in ("revoked", "assigned partitions", "Joined group", "Revoking", "rebalanc"):
            if word in message:
                self.interesting[f"{record.name}: {word}"] += 1
        if record.levelno >= logging.WARNING:
            bucket = self.samples[record.name]
            if len(bucket) < 3:
                bucket.append(f"{record.levelname} {message[:240]}")

    def reset(self) -> None:
        self.levels.clear()
        self.samples.clear()
        self.interesting.clear()

    def summary(self) -> dict[str, Any]:
        return {
            "levels": dict(self.levels),
            "events": dict(self.interesting),
            "warnings": {k: list(v) for k, v in self.samples.items()},
        }


# --- contender: deliverytrack engine --------------------------------------------------------


class TimedSensor:
    """Timing hooks on the real FoldEngine (its ``sensor``: no behaviour change).

    A window opens when a batch is handed to ``process`` (a batch arrived) and closes when the
    ``process`` call that brought the workload events to the target returns: that batch's
    status changes and changelog are acked and its RocksDB WriteBatch is written (durable). The
    offset commit after it is outside the window.
    """

    LABELS = {
        "process": "_process total",
        "fold": "_fold_partition (decode, fold, encode)",
        "correlate": "_correlate_partition (provider-id links)",
        "write": "_write (RocksDB batch, aggregates, indexes)",
        "publish": "_publish status changes (until acked)",
        "changelog": "_publish_changelog (until acked)",
        "commit": "_commit offsets",
    }

    def __init__(self, windows: Windows, workload_topics: set[str]) -> None:
        self.windows = windows
        self.phases: Counter[str] = Counter()
        self.cpu: Counter[str] = Counter()
        """CPU seconds of this process (all threads) in each step: the wall time less the
        waits (acks, fetches)."""
        self.batch_sizes: list[int] = []
        # Workload events only: the engine also folds what it feeds itself (provider-id
        # links for the webhook correlator), which must not close a window early.
        self.workload_topics = workload_topics
        self.workload_events = 0

    def batch_started(self, batch: Any) -> None:
        self.windows.batch_arrived()

    def batch_done(self, batch: Any) -> None:
        self.batch_sizes.append(sum(len(records) for records in batch.values()))
        self.workload_events += sum(
            len(records) for tp, records in batch.items() if tp.topic in self.workload_topics
        )
        self.windows.batch_done(self.workload_events)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            if name != "commit" or not self.windows.done:
                # .get: a sensor must not raise (another commit's engine may name more steps)
                label = self.LABELS.get(name, name)
                self.phases[label] += time.perf_counter() - started
                self.cpu[label] += time.process_time() - cpu


def _paused(consumer: AIOKafkaConsumer, topic: str, pause: bool) -> Callable[[], None]:
    def apply() -> None:
        tps = [tp for tp in consumer.assignment() if tp.topic == topic]
        if pause:
            consumer.pause(*tps)
        else:
            consumer.resume(*tps)

    return apply


async def run_engine(
    feed: Feed,
    broker: str,
    prefix: str,
    app_id: str,
    work_dir: Path,
    partitions: int,
    timeout: float,
    profiler: Profiler | None,
    oracle: bool = False,
) -> Result:
    """The engine in this process; ``oracle``: with its decode + fold + encode replaced by a
    look-up of each input's precomputed result (``oracle_fold``)."""
    settings = Settings(
        broker=broker,
        app_id=app_id,
        topic_prefix=prefix,
        data_dir=work_dir / app_id,
        partitions=partitions,
    )
    topics = Topics.from_prefix(prefix, app_id)
    assert (topics.send_results, topics.commands) == (feed.send_topic, feed.commands_topic)
    await feed.prepare(partitions)
    windows = Windows(feed.targets, profiler)
    sensor = TimedSensor(windows, {topics.send_results, topics.commands})
    engine = FoldEngine(settings, sensor=sensor)
    if oracle:
        oracle_fold(engine, feed.work)
    sizes_of_changes = _count_status_changes(engine)
    await engine.start()
    try:
        ok, note = await drive(
            windows,
            feed,
            lambda: _paused(engine.consumer, feed.commands_topic, True)(),
            lambda: _paused(engine.consumer, feed.commands_topic, False)(),
            timeout,
            lambda: sensor.workload_events,
        )
        stats = engine.stats
        seconds = windows.seconds
        phases = {name: round(value, 2) for name, value in sensor.phases.items()}
        phases["outside _process (getmany, commit, loop)"] = round(
            seconds - sensor.phases["_process total"], 2
        )
        sizes = sensor.batch_sizes
        stores = [s for p in engine.assigned_partitions if (s := engine.store(p)) is not None]
        extra = {
            "windows_s": [round(s, 2) for s in windows.spans],
            "cpu_in_windows": windows.cpu_share(),
            "batches": stats.batches,
            "applied": stats.applied,
            "status_changes": stats.status_changes,
            "changelog_writes": stats.changelog_writes,
            "dead_letters": stats.dead_letters,
            "restored": stats.restored,
            "assigned": engine.assigned_partitions,
            "batch_size_median/max": (
                int(statistics.median(sizes)) if sizes else 0,
                max(sizes) if sizes else 0,
            ),
            "time_by_step_s": phases,
            "cpu_by_step_s": {name: round(value, 2) for name, value in sensor.cpu.items()},
            "settings": (
                f"fold_batch_max_records={settings.fold_batch_max_records} "
                f"fold_batch_timeout_ms={settings.fold_batch_timeout_ms} "
                f"producer_linger_ms={settings.producer_linger_ms} "
                f"record_cache_size={settings.record_cache_size} "
                # a --baseline commit may predate the setting (its status changes are full)
                f"status_change_record={getattr(settings, 'status_change_record', 'full')}"
            ),
            "status_change_bytes (count, mean, total MB)": (
                sizes_of_changes[0],
                round(sizes_of_changes[1] / max(1, sizes_of_changes[0])),
                round(sizes_of_changes[1] / 1e6, 1),
            ),
            "record_cache_hits/misses": (
                sum(store.cache_hits for store in stores),
                sum(store.cache_misses for store in stores),
            ),
            "loading": feed.load_log,
        }
        mode = "phased" if feed.phased else "backlog"
        extra["self_fed_events (provider-id links, also folded)"] = (
            stats.events - sensor.workload_events
        )
        events = sensor.workload_events
        name = "engine, fold looked up (oracle)" if oracle else "deliverytrack engine"
        return Result(name, mode, events, seconds, extra, ok, note)
    finally:
        await engine.stop()


OracleStep = tuple[str, dict[str, Any] | None, bytes | None, tuple[HotOutput, ...]]


def oracle_fold(engine: FoldEngine, work: Workload) -> None:
    """Replace the engine's ``BatchFold.fold`` (decode, fold, encode: ``fold_batch``) by a
    look-up of each input's result, computed beforehand by the engine's own hot fold in key
    order: the ceiling of any speed-up of the fold itself. What stays is what any fold needs
    around it: each messageId's stored record read once per batch (``get_for_fold``), a new
    record object per change (its facts are computed again at the write), the outputs routed
    as the engine routes them, and everything after the fold (publish, changelog, write,
    links, commit)."""
    hot = engine.batch.hot
    steps: dict[bytes, OracleStep] = {}
    for (_, send), commands in zip(work.sends, work.commands, strict=True):
        record: HotRecord | None = None
        for kind, value in ((SEND, send), *((COMMAND, command) for _, command in commands)):
            event = hot.decode(kind, value)
            step = None if event is None else hot.fold(record, kind, event)
            if event is None or step is None:
                raise SystemExit(f"oracle: the hot path declined a workload input: {value!r}")
            new = step.record
            changed = new is not None and new is not record
            steps[value] = (
                event["messageId"],
                new.data if changed and new is not None else None,
                new.json if changed and new is not None else None,
                step.outputs,
            )
            record = new if changed else record
    router, stats = engine.batch.router, engine.batch.stats

    def fold_looked_up(
        store: Any, records: list[Any], outputs: list[Any], markers: Any = None
    ) -> dict[str, Any]:
        emitted: list[Any] = []
        before: dict[str, Any] = {}
        last: dict[str, HotRecord] = {}
        for index, msg in enumerate(records):
            message_id, data, raw, outs = steps[msg.value]
            if message_id not in before:
                before[message_id] = store.get_for_fold(message_id)
            if raw is not None:
                last[message_id] = HotRecord(data, raw)
            for out in outs:
                emitted.append((index, *out))
        router.fold_batch_outputs(records, emitted, outputs)
        stats.events += len(records)
        stats.applied += sum(1 for msg in records if steps[msg.value][2] is not None)
        stats.hot += len(records)
        return {mid: (before[mid], new, new.json) for mid, new in last.items()}

    engine.batch.fold = fold_looked_up  # type: ignore[method-assign]


def _count_status_changes(engine: FoldEngine) -> list[int]:
    """[count, bytes] of the status changes the engine publishes, counted where the publisher
    hands every published batch to the dashboard's ring (a pass over the outputs it makes
    anyway; nothing counted on a --baseline commit without that ring)."""
    counts = [0, 0]
    recent = getattr(engine, "recent", None)
    if recent is None:
        return counts
    note = recent.note
    topic = engine.topics.status_changes

    def counting(outputs: Any) -> None:
        for out in outputs:
            if out.topic == topic:
                counts[0] += 1
                counts[1] += len(out.value)
        note(outputs)

    recent.note = counting  # type: ignore[method-assign]
    return counts


# --- contender: raw loop ---------------------------------------------------------------------


async def run_raw(
    feed: Feed, broker: str, group: str, work_dir: Path, partitions: int, timeout: float
) -> Result:
    """aiokafka getmany + codec decode + fold + rocksdict (raw mode, one DB per partition), a
    per-poll cache (one get and one put per key per poll) and one WriteBatch per partition per
    poll. Records of a poll are ordered like the engine orders them. No outputs, no commits."""
    from rocksdict import Options, Rdict, WriteBatch

    await feed.prepare(partitions)
    decoders: dict[str, Callable[[bytes | None], Any]] = {
        feed.send_topic: decode_send_result,
        feed.commands_topic: decode_command,
    }
    rank = {feed.send_topic: 0, feed.commands_topic: 1}
    consumer = AIOKafkaConsumer(
        feed.send_topic,
        feed.commands_topic,
        bootstrap_servers=servers_of(broker),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4_194_304,
        fetch_max_bytes=16_777_216,
    )
    state_dir = work_dir / group
    state_dir.mkdir(parents=True, exist_ok=True)
    dbs: dict[int, Any] = {}
    counts: Counter[str] = Counter()
    windows = Windows(feed.targets)

    async def loop() -> None:
        while not windows.done:
            batch = await consumer.getmany(timeout_ms=50, max_records=20_000)
            if not batch:
                continue
            windows.batch_arrived()
            by_partition: dict[int, list[ConsumerRecord[bytes, bytes]]] = defaultdict(list)
            for tp, records in batch.items():
                by_partition[tp.partition].extend(records)
            for partition, records in by_partition.items():
                db = dbs.get(partition)
                if db is None:
                    options = Options(raw_mode=True)
                    options.create_if_missing(True)
                    db = dbs[partition] = Rdict(str(state_dir / f"p{partition}.db"), options)
                records.sort(key=lambda r: (r.timestamp, rank[r.topic], r.offset))
                cache: dict[bytes, TrackingRecord | None] = {}
                changed: set[bytes] = set()
                for msg in records:
                    counts["events"] += 1
                    event = decoders[msg.topic](msg.value)
                    key = b"r" + msg.key
                    if key in cache:
                        record = cache[key]
                    else:
                        raw = db.get(key)
                        record = cache[key] = None if raw is None else decode_record(raw)
                    new, emitted = fold(record, event)
                    if new is not record:
                        cache[key] = new
                        changed.add(key)
                        counts["applied"] += 1
                    if any(isinstance(out, EventRejected) for out in emitted):
                        counts["rejected (unknown-message)"] += 1
                writes = WriteBatch(raw_mode=True)
                for key in changed:
                    new = cache[key]
                    if new is not None:
                        writes.put(key, encode_record(new))
                counts["puts"] += len(changed)
                db.write(writes)
            windows.batch_done(counts["events"])

    await consumer.start()
    task = asyncio.create_task(loop())
    try:
        ok, note = await drive(
            windows,
            feed,
            _paused(consumer, feed.commands_topic, True),
            _paused(consumer, feed.commands_topic, False),
            timeout,
            lambda: counts["events"],
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
        for db in dbs.values():
            db.close()
    extra: dict[str, Any] = {
        "windows_s": [round(s, 2) for s in windows.spans],
        "cpu_in_windows": windows.cpu_share(),
    }
    extra.update((k, v) for k, v in counts.items() if k != "events")
    mode = "phased" if feed.phased else "backlog"
    return Result("raw loop", mode, counts["events"], windows.seconds, extra, ok, note)


# --- contender: Kafka I/O floor --------------------------------------------------------------

# Per input value: its outputs (status changes, provider-id links) and the record's JSON after it
# (None when the fold changes nothing), all computed before the timed window.
Precomputed = dict[bytes, tuple[list[tuple[str, bytes, bytes]], bytes | None]]


def precompute_outputs(work: Workload) -> Precomputed:
    """What the engine publishes for each input, byte for byte, by the same fold and codec."""
    table: Precomputed = {}
    state: dict[bytes, TrackingRecord | None] = {}
    items = [*work.sends, *(item for commands in work.commands for item in commands)]
    for key, value in items:
        event = decode_send_result(value) if key not in state else decode_command(value)
        record = state.get(key)
        new, emitted = fold(record, event)
        outs: list[tuple[str, bytes, bytes]] = []
        raw: bytes | None = None
        for out in emitted:
            if isinstance(out, StatusChanged):
                raw = encode_record(out.record)
                outs.append(("status-changes", key, encode_status_changed(out, raw)))
            elif isinstance(out, ProviderIdLinked):
                link = provider_key(out.provider_id, out.provider_message_id).encode()
                outs.append(("provider-ids", link, encode(out)))
        if new is not record:
            state[key] = new
            raw = raw if raw is not None else encode_record(new)  # type: ignore[arg-type]
        table[value] = (outs, raw)
    return table


async def run_io_floor(
    feed: Feed,
    broker: str,
    prefix: str,
    group: str,
    partitions: int,
    timeout: float,
    outputs_of: Precomputed,
) -> Result:
    """The engine's Kafka traffic with none of its work: the same consumer and producer
    settings, the same outputs byte for byte (looked up, not computed), its own provider-id
    links read back, one changelog record per changed key (and per link) per batch plus a
    position record, acks awaited, offsets committed. No decode, no fold, no RocksDB, no
    watermark: an upper bound for any fold with these outputs on this broker and machine."""
    out_topics, changelog = await _floor_topics(feed, prefix, partitions)
    servers = servers_of(broker)
    producer = AIOKafkaProducer(
        bootstrap_servers=servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=1_048_576,
        max_request_size=4_194_304,
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4_194_304,
        fetch_max_bytes=16_777_216,
        fetch_max_wait_ms=100,
    )
    windows = Windows(feed.targets)
    counts: Counter[str] = Counter()

    async def send(topic: str, partition: int, rows: list[tuple[bytes, bytes]]) -> list[Any]:
        futures = []
        batch = producer.create_batch()
        for key, value in rows:
            if batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    async def loop() -> None:
        ids = sorted(await producer.partitions_for(changelog))
        while not windows.done:
            batch = await consumer.getmany(timeout_ms=50, max_records=20_000)
            if not batch:
                continue
            windows.batch_arrived()
            grouped: dict[tuple[str, int], list[tuple[bytes, bytes]]] = defaultdict(list)
            latest: dict[int, dict[bytes, bytes]] = defaultdict(dict)
            offsets: dict[TopicPartition, int] = {}
            for tp, records in batch.items():
                offsets[tp] = records[-1].offset + 1
                if tp.topic == out_topics["provider-ids"]:
                    # The engine folds its own links into correlation states (changelogged).
                    counts["self_fed_links"] += len(records)
                    for msg in records:
                        latest[tp.partition][b"c" + msg.key] = msg.value
                    continue
                for msg in records:
                    counts["events"] += 1
                    outs, raw = outputs_of[msg.value]
                    for name, key, value in outs:
                        partition = (
                            tp.partition if name == "status-changes" else partition_for(key, ids)
                        )
                        grouped[(out_topics[name], partition)].append((key, value))
                    if raw is not None:
                        latest[tp.partition][msg.key] = raw
            futures: list[Any] = []
            for (topic, partition), rows in grouped.items():
                futures.extend(await send(topic, partition, rows))
                counts["outputs"] += len(rows)
            await asyncio.gather(*futures)
            futures = []
            for partition, rows in latest.items():
                futures.extend(await send(changelog, partition, list(rows.items())))
                futures.append(
                    await producer.send(changelog, b"{}", key=b"\x00position", partition=partition)
                )
                counts["changelog_writes"] += len(rows)
            await asyncio.gather(*futures)
            await consumer.commit(offsets)
            windows.batch_done(counts["events"])

    await producer.start()
    consumer.subscribe([feed.send_topic, feed.commands_topic, out_topics["provider-ids"]])
    await consumer.start()
    task = asyncio.create_task(loop())
    try:
        ok, note = await drive(
            windows,
            feed,
            _paused(consumer, feed.commands_topic, True),
            _paused(consumer, feed.commands_topic, False),
            timeout,
            lambda: counts["events"],
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
        await producer.stop()
    return _floor_result("Kafka I/O floor", feed, windows, counts, {}, ok, note)


async def _floor_topics(feed: Feed, prefix: str, partitions: int) -> tuple[dict[str, str], str]:
    """Both I/O floors' topics, made: the outputs' by name, and the changelog."""
    await feed.prepare(partitions)
    out_topics = {name: f"{prefix}{name}" for name in ("status-changes", "provider-ids")}
    changelog = f"{prefix}records-changelog"
    await create_topics(feed.servers, [*out_topics.values(), changelog], partitions)
    return out_topics, changelog


def _floor_result(
    label: str,
    feed: Feed,
    windows: Windows,
    counts: Counter[str],
    more: dict[str, Any],
    ok: bool,
    note: str,
) -> Result:
    """An I/O floor's result: its windows, CPU per event (all threads), counts, and ``more``."""
    events = counts["events"]
    extra: dict[str, Any] = {
        "windows_s": [round(s, 2) for s in windows.spans],
        "cpu_in_windows": windows.cpu_share(),
        "cpu_per_event": windows.cpu_per_event(events),
        "cpu_per_event_by_thread_us": windows.thread_cpu_per_event(events),
        **more,
    }
    extra.update((k, v) for k, v in counts.items() if k != "events")
    mode = "phased" if feed.phased else "backlog"
    return Result(label, mode, events, windows.seconds, extra, ok, note)


# --- contender: Kafka I/O floor with a C client (confluent-kafka / librdkafka) -------------

CONFLUENT_INSTALL = ".venv/bin/pip install -e '.[bench]'  (confluent-kafka>=2.3)"


def confluent_missing() -> str | None:
    """Why the ``io-ck`` contender cannot run in this venv (None: it can)."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError as exc:
        return f"{exc}"
    return None


def _ck_paused(consumer: Any, topic: str, pause: bool) -> Callable[[], None]:
    """``_paused`` for a confluent-kafka Consumer: its assigned partitions of ``topic``."""

    def apply() -> None:
        tps = [tp for tp in consumer.assignment() if tp.topic == topic]
        if pause:
            consumer.pause(tps)
        else:
            consumer.resume(tps)

    return apply


async def run_io_ck(
    feed: Feed,
    broker: str,
    prefix: str,
    group: str,
    partitions: int,
    timeout: float,
    outputs_of: Precomputed,
    reports: str,
) -> Result:
    """``run_io_floor`` with confluent-kafka (librdkafka) instead of aiokafka, in this asyncio
    process: the same topics, group, outputs byte for byte and on the same partitions (status
    changes on the input's partition, links by aiokafka's murmur2 ``DefaultPartitioner``), the
    same changelog records, and the same steps per batch: outputs produced and acked, then the
    changelog produced and acked, then offsets committed synchronously.

    The event loop never blocks on librdkafka: a batch is taken with ``consume(20000, 0)`` (what
    librdkafka has fetched already); when there is none, a one-thread executor waits for the
    first message (``consume(1, 0.05)``, the GIL released) and the batch is topped up without
    waiting. Acks are awaited with ``flush()`` in that thread (the wait is inside librdkafka,
    the GIL released; nothing polls on the event loop); ``reports='all'`` calls a Python
    delivery callback per message (like a per-record future), ``reports='errors'`` sets
    ``delivery.report.only.error`` (callbacks only for failures; ``flush()`` still returns once
    every message is acked or failed). The commit (``asynchronous=False``) and the consumer's
    close run in the same thread."""
    from concurrent.futures import ThreadPoolExecutor

    import confluent_kafka
    from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
    from confluent_kafka import TopicPartition as CkPartition

    out_topics, changelog = await _floor_topics(feed, prefix, partitions)
    links_topic = out_topics["provider-ids"]
    status_topic = out_topics["status-changes"]
    bootstrap = ",".join(servers_of(broker))
    ck_log = logging.getLogger("bench.confluent")
    counts: Counter[str] = Counter()
    failures: list[str] = []

    def on_error(error: KafkaError) -> None:
        counts["client_errors"] += 1
        ck_log.warning("client error: %s", error)

    def on_delivery(error: KafkaError | None, msg: Message) -> None:
        if error is not None:
            failures.append(f"{msg.topic()}[{msg.partition()}]: {error}")

    # One thread for every blocking librdkafka call, so none is in flight at close.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-ck")
    loop = asyncio.get_running_loop()
    started_threads = await loop.run_in_executor(pool, thread_ids)  # the pool's thread too
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": f"{group}-producer",
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 20,
            "batch.size": 1_048_576,
            "batch.num.messages": 1_000_000,  # bytes bound a batch, as in aiokafka
            "message.max.bytes": 4_194_304,  # aiokafka's max_request_size
            "queue.buffering.max.messages": 1_000_000,
            "delivery.report.only.error": reports == "errors",
            "on_delivery": on_delivery,
            "error_cb": on_error,
            "logger": ck_log,
        }
    )
    # Metadata now: librdkafka starts the broker's thread (rdk:brokerN) once it learns the node.
    described = await loop.run_in_executor(pool, producer.list_topics, changelog, 10.0)
    ids = sorted(described.topics[changelog].partitions)
    THREAD_OWNERS.update(dict.fromkeys(thread_ids() - started_threads, "producer"))
    started_threads = thread_ids()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": f"{group}-consumer",
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "max.partition.fetch.bytes": 4_194_304,
            "fetch.max.bytes": 16_777_216,
            "fetch.wait.max.ms": 100,
            "error_cb": on_error,
            "logger": ck_log,
        }
    )
    await loop.run_in_executor(pool, consumer.list_topics, changelog, 10.0)
    THREAD_OWNERS.update(dict.fromkeys(thread_ids() - started_threads, "consumer"))
    windows = Windows(feed.targets)
    batch_max = 20_000

    def produce(topic: str, key: bytes, value: bytes, partition: int) -> None:
        try:
            producer.produce(topic, value, key, partition)
        except BufferError:  # the local queue is full: let librdkafka send, then retry once
            producer.poll(0.1)
            producer.produce(topic, value, key, partition)

    async def acked() -> None:
        left = await loop.run_in_executor(pool, producer.flush, 60.0)
        if left or failures:
            raise RuntimeError(f"{left} unacked after 60s; failed: {failures[:3]}")

    # Any: Message's accessors are typed Optional (None only on error messages, checked first).
    async def fetch() -> list[Any]:
        messages = consumer.consume(batch_max, 0)
        if not messages:
            messages = await loop.run_in_executor(pool, consumer.consume, 1, 0.05)
            if messages:
                messages += consumer.consume(batch_max - len(messages), 0)
        return messages

    failed: list[BaseException] = []

    async def run() -> None:
        try:
            await batches()
        except Exception as exc:  # drive() waits on the windows: end them, report it
            failed.append(exc)
            for event in windows.reached:
                event.set()

    async def batches() -> None:
        while not windows.done:
            messages = await fetch()
            if not messages:
                continue
            windows.batch_arrived()
            latest: dict[int, dict[bytes, bytes]] = defaultdict(dict)
            offsets: dict[tuple[str, int], int] = {}
            for msg in messages:
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                        continue
                    raise KafkaException(error)
                topic, partition = msg.topic(), msg.partition()
                offsets[(topic, partition)] = msg.offset() + 1
                key = msg.key()
                if topic == links_topic:
                    # The engine folds its own links into correlation states (changelogged).
                    counts["self_fed_links"] += 1
                    latest[partition][b"c" + key] = msg.value()
                    continue
                counts["events"] += 1
                outs, raw = outputs_of[msg.value()]
                for name, out_key, value in outs:
                    if name == "status-changes":
                        produce(status_topic, out_key, value, partition)
                    else:
                        produce(links_topic, out_key, value, partition_for(out_key, ids))
                counts["outputs"] += len(outs)
                if raw is not None:
                    latest[partition][key] = raw
            await acked()
            for partition, rows in latest.items():
                for key, value in rows.items():
                    produce(changelog, key, value, partition)
                produce(changelog, b"\x00position", b"{}", partition)
                counts["changelog_writes"] += len(rows)
            await acked()
            commit = [CkPartition(t, p, offset) for (t, p), offset in offsets.items()]
            await loop.run_in_executor(
                pool, functools.partial(consumer.commit, offsets=commit, asynchronous=False)
            )
            windows.batch_done(counts["events"])

    consumer.subscribe([feed.send_topic, feed.commands_topic, links_topic])
    task = asyncio.create_task(run())
    try:
        ok, note = await drive(
            windows,
            feed,
            _ck_paused(consumer, feed.commands_topic, True),
            _ck_paused(consumer, feed.commands_topic, False),
            timeout,
            lambda: counts["events"],
        )
        if failed:
            ok, note = False, f"{failed[0]!r}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        pool.shutdown(wait=True)  # no librdkafka call in flight
        consumer.close()
        producer.flush(10.0)
        THREAD_OWNERS.clear()
    client = (
        f"confluent-kafka {confluent_kafka.version()}, librdkafka {confluent_kafka.libversion()[0]}"
    )
    more = {"delivery_reports": reports, "client": client}
    label = "Kafka I/O floor, confluent-kafka"
    return _floor_result(label, feed, windows, counts, more, ok, note)


# --- contender: stock Faust agent ------------------------------------------------------------


def faust_child(args: argparse.Namespace) -> None:
    """Runs in a child process: a stock Faust worker, one agent over both input topics, a
    RocksDB table. Per event (``--faust-work fold``): codec decode, table.get, decode the
    record, fold, ``table[key] = encode_record(new)`` when it changed. ``--faust-work json``
    (calibration against the earlier measurements): orjson.loads, table.get, a small JSON
    read-modify-write, ``table[key] = orjson.dumps(...)`` on every event."""
    import faust

    send_topic, commands_topic = args.faust_topics.split(",")
    targets = [int(t) for t in args.faust_targets.split(",")]
    if args.faust_broker_pid:
        BROKER_PID.append(args.faust_broker_pid)
    app = faust.App(
        args.faust_app_id,
        broker=args.broker,
        store="rocksdb://",
        datadir=args.faust_datadir,
        web_enabled=False,
        topic_partitions=args.partitions,
        value_serializer="raw",
        autodiscover=False,
    )
    source = app.topic(send_topic, commands_topic, key_type=bytes, value_type=bytes)
    table = app.Table("records", partitions=args.partitions, key_type=bytes, value_type=bytes)
    decoders: dict[str, Callable[[bytes | None], Any]] = {
        send_topic: decode_send_result,
        commands_topic: decode_command,
    }
    counts: Counter[str] = Counter()
    profile_path = os.environ.get("DT_BENCH_FAUST_PROFILE")  # cProfile the child's windows
    windows = Windows(targets, Profiler("cprofile", Path(profile_path)) if profile_path else None)
    json_work = args.faust_work == "json"

    def emit(line: str) -> None:
        # fd 1 directly: the Faust worker redirects sys.stdout into its logger.
        os.write(1, (line + "\n").encode())

    async def wait_for_go(tps: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)
        app.consumer.resume_partitions(tps)

    @app.agent(source)
    async def fold_records(stream: Any) -> None:
        async for event in stream.events():
            windows.batch_arrived()
            key = event.key
            if json_work:
                payload = orjson.loads(event.value)
                raw = table.get(key)
                stored = orjson.loads(raw) if raw is not None else {"events": 0}
                stored["events"] += 1
                stored["status"] = payload.get("status", "SENT")
                stored["lastEventId"] = payload["eventId"]
                table[key] = orjson.dumps(stored)
                counts["applied"] += 1
            else:
                decoded = decoders[event.message.topic](event.value)
                raw = table.get(key)
                record = None if raw is None else decode_record(raw)
                new, emitted = fold(record, decoded)
                if new is not record and new is not None:
                    table[key] = encode_record(new)
                    counts["applied"] += 1
                if any(isinstance(out, EventRejected) for out in emitted):
                    counts["rejected (unknown-message)"] += 1
            counts["events"] += 1
            index = windows.index
            windows.batch_done(counts["events"])
            if windows.index == index:
                continue
            if not windows.done:
                tps = [tp for tp in app.consumer.assignment() if tp.topic == commands_topic]
                app.consumer.pause_partitions(tps)
                asyncio.ensure_future(wait_for_go(tps))
                emit(f"{PHASE_MARKER}{windows.index}")
            else:
                body = {
                    "events": counts["events"],
                    "spans": windows.spans,
                    "cpu_in_windows": windows.cpu_share(),
                    **counts,
                }
                if windows.profiler is not None:
                    windows.profiler.report()  # writes the .prof file
                emit(RESULT_MARKER + orjson.dumps(body).decode())

    worker = faust.Worker(app, loglevel="info", quiet=True)
    worker.execute_from_commandline()


async def run_faust(
    feed: Feed,
    broker: str,
    app_id: str,
    work_dir: Path,
    partitions: int,
    timeout: float,
    work: str = "fold",
) -> Result:
    await feed.prepare(partitions)
    datadir = work_dir / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / f"{app_id}.log"
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--faust-child",
        "--broker",
        broker,
        "--partitions",
        str(partitions),
        "--faust-topics",
        f"{feed.send_topic},{feed.commands_topic}",
        "--faust-app-id",
        app_id,
        "--faust-datadir",
        str(datadir),
        "--faust-targets",
        ",".join(str(t) for t in feed.targets),
        "--faust-work",
        work,
        "--faust-broker-pid",
        str(BROKER_PID[0] if BROKER_PID else 0),
    ]
    mode = "phased" if feed.phased else "backlog"
    name = "stock Faust agent" + (" (json RMW)" if work == "json" else "")
    result, _ = await run_child(argv, feed, log_path, timeout)
    log_text = log_path.read_text(errors="replace")
    warnings = [
        line[:240]
        for line in log_text.splitlines()
        if "[WARNING]" in line or "[ERROR]" in line or "[CRITICAL]" in line
    ]
    extra: dict[str, Any] = {"warnings_in_log": len(warnings), "first_warnings": warnings[:3]}
    if result is None:
        tail = "\n".join(log_text.splitlines()[-15:])
        return Result(name, mode, 0, 0.0, extra, False, f"no result:\n{tail}")
    spans = [float(s) for s in result.pop("spans")]
    events = int(result.pop("events"))
    extra = {"windows_s": [round(s, 2) for s in spans], **result, **extra}
    extra["loading"] = feed.load_log
    return Result(name, mode, events, sum(spans), extra)


async def run_child(
    argv: list[str],
    feed: Feed,
    log_path: Path,
    timeout: float,
    env: dict[str, str] | None = None,
) -> tuple[dict[str, Any] | None, str]:
    """Run a contender's child process (stderr to ``log_path``) until it prints its result.
    When it prints a phase line (it has paused its commands partitions) the commands are loaded
    and it is told to go on (a line on its stdin). Returns its result (None if it printed none
    in time) and the error line it printed, if any. The child is stopped in every case."""
    result: dict[str, Any] | None = None
    error = ""
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
            start_new_session=True,
        )
        assert proc.stdout is not None and proc.stdin is not None
        deadline = time.monotonic() + timeout
        try:
            while result is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    line = await asyncio.wait_for(proc.stdout.readline(), remaining)
                except TimeoutError:
                    break
                if not line:
                    break
                text = line.decode(errors="replace").strip()
                if text.startswith(PHASE_MARKER):
                    await feed.load_commands()  # the child paused its commands partitions
                    proc.stdin.write(b"go\n")
                    await proc.stdin.drain()
                elif text.startswith(RESULT_MARKER):
                    result = orjson.loads(text[len(RESULT_MARKER) :])
                elif text.startswith(ERROR_MARKER):
                    error = text[len(ERROR_MARKER) :]
        finally:
            await _stop_child(proc)
    return result, error


async def _stop_child(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 30)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


# --- contender: the engine of another commit (--baseline REV) --------------------------------


@dataclass(slots=True)
class Baseline:
    """Another commit's tree, extracted for the baseline child to import its package from."""

    rev: str
    commit: str
    short: str
    subject: str
    tree: Path

    @property
    def name(self) -> str:
        return f"baseline {self.short}"


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=30
    )
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout.strip()


@contextlib.contextmanager
def baseline_tree(rev: str) -> Iterator[Baseline]:
    """REV's whole tree (``git archive``, so no worktree is registered in the repository) in a
    temp dir, removed on exit, also on error."""
    try:
        commit = _git("rev-parse", "--verify", "--end-of-options", f"{rev}^{{commit}}")
    except SystemExit as exc:
        raise SystemExit(f"--baseline {rev}: not a commit of {ROOT} ({exc})") from None
    short = _git("rev-parse", "--short", commit)
    subject = _git("log", "-1", "--format=%s", commit)
    tree = Path(tempfile.mkdtemp(prefix=f"dt-bench-baseline-{short}-"))
    try:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=120,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tree, filter="tar")
        if not (tree / "deliverytrack" / "__init__.py").is_file():
            raise SystemExit(f"--baseline {rev}: commit {short} has no deliverytrack/ package")
        yield Baseline(rev, commit, short, subject, tree)
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def this_checkout() -> Baseline:
    """This checkout as a 'baseline' tree, for --engine-in-child (its working tree, as the
    in-process engine imports it)."""
    commit = _git("rev-parse", "HEAD")
    short = _git("rev-parse", "--short", commit)
    return Baseline("this checkout", commit, short, _git_describe(), ROOT)


async def run_baseline(
    feed: Feed,
    broker: str,
    prefix: str,
    app_id: str,
    work_dir: Path,
    partitions: int,
    timeout: float,
    baseline: Baseline,
    name: str = "",
) -> Result:
    """The engine contender (run_engine) in a child process that imports REV's package: this
    script with --baseline-child, REV's tree first on PYTHONPATH and this checkout not on
    sys.path. The inputs are loaded here, as for the engine; the child pauses its commands
    partitions between the windows and waits for a go, as the Faust child does. With
    --engine-in-child today's engine runs the same way (``baseline`` is this checkout)."""
    name = name or baseline.name
    await feed.prepare(partitions)
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--baseline-child",
        "--broker",
        broker,
        "--partitions",
        str(partitions),
        "--input",
        "phased" if feed.phased else "backlog",
        "--timeout",
        str(timeout),
        "--child-topics",
        f"{feed.send_topic},{feed.commands_topic}",
        "--child-prefix",
        prefix,
        "--child-app-id",
        app_id,
        "--child-work-dir",
        str(work_dir),
        "--child-targets",
        ",".join(str(t) for t in feed.targets),
        "--child-broker-pid",
        str(BROKER_PID[0] if BROKER_PID else 0),
    ]
    paths = [str(baseline.tree), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths),
        BASELINE_TREE_ENV: str(baseline.tree),
    }
    mode = "phased" if feed.phased else "backlog"
    log_path = work_dir / f"{app_id}.log"
    # The child's own deadline (run_engine's) is ``timeout``; this one also covers its start.
    result, error = await run_child(argv, feed, log_path, timeout + 120, env)
    commit = {"commit": f"{baseline.commit} ({baseline.rev}): {baseline.subject}"}
    commit["process"] = "child (imports the package from the tree below)"
    if result is None:
        log_text = log_path.read_text(errors="replace")
        if not error:
            import_errors = [
                line
                for line in log_text.splitlines()
                if "ImportError" in line or "ModuleNotFoundError" in line
            ]
            if import_errors:
                error = f"this harness imports what commit {baseline.short} lacks: "
                error += import_errors[-1]
        tail = "\n".join(log_text.splitlines()[-15:])
        note = error or f"no result from the child:\n{tail}"
        return Result(name, mode, 0, 0.0, commit, False, note)
    extra = {**commit, **result["extra"], "loading": feed.load_log}
    ok, note = bool(result["ok"]), str(result["note"])
    events, seconds = int(result["events"]), float(result["seconds"])
    return Result(name, mode, events, seconds, extra, ok, note)


class ParentFeed(Feed):
    """The baseline child's feed: the parent loads the input. Between the windows the child
    (its commands partitions paused) prints a phase line and waits for the parent's go."""

    __slots__ = ("_targets",)

    def __init__(self, send_topic: str, commands_topic: str, targets: list[int], phased: bool):
        super().__init__([], send_topic, commands_topic, Workload([], []), phased)
        self._targets = targets

    @property
    def targets(self) -> list[int]:
        return self._targets

    async def prepare(self, partitions: int) -> None:
        """Topics created and sends loaded by the parent, before this child started."""

    async def load_commands(self) -> None:
        _emit(f"{PHASE_MARKER}1")
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if not line:
            raise RuntimeError("the harness closed the baseline child's stdin")
        self.load_log.append("commands loaded by the harness process (untimed)")


def _emit(line: str) -> None:
    os.write(1, (line + "\n").encode())


def _die_with_parent() -> None:
    """Linux: have the kernel send this child SIGTERM when the harness dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def baseline_api_problem(tree: Path) -> str:
    """Why this child cannot run the engine contender on REV's package ('' when it can)."""
    import inspect

    import deliverytrack

    where = Path(deliverytrack.__file__ or "?").resolve()
    if not where.is_relative_to(tree):
        return f"deliverytrack was imported from {where}, not from the baseline tree {tree}"
    elsewhere = sorted(
        name
        for name, module in list(sys.modules.items())
        if name.partition(".")[0] == "deliverytrack"
        and getattr(module, "__file__", None)
        and not Path(module.__file__).resolve().is_relative_to(tree)
    )
    if elsewhere:
        return f"modules imported from outside the baseline tree {tree}: {elsewhere}"
    missing = []
    if "sensor" not in inspect.signature(FoldEngine).parameters:
        missing.append("FoldEngine(settings, sensor=...)")
    for attr in ("start", "stop", "consumer", "assigned_partitions", "store"):
        if not hasattr(FoldEngine, attr):
            missing.append(f"FoldEngine.{attr}")
    # The engine's package: the sensor calls moved from loop.py to inflight.py (pipelined).
    package = Path(inspect.getfile(FoldEngine)).parent
    source = "".join(path.read_text() for path in sorted(package.glob("*.py")))
    for call in ("batch_started(", "batch_done("):
        if call not in source:
            missing.append(f"a sensor.{call}) call in {package}")
    fields = set(getattr(Settings, "model_fields", {}))
    for name in (
        "broker",
        "app_id",
        "topic_prefix",
        "data_dir",
        "partitions",
        "fold_batch_max_records",
        "fold_batch_timeout_ms",
        "producer_linger_ms",
        "record_cache_size",
    ):
        if name not in fields:
            missing.append(f"Settings.{name}")
    if missing:
        return "the harness needs what this commit's engine lacks: " + ", ".join(missing)
    return ""


def baseline_child(args: argparse.Namespace) -> int:
    """Runs in the child process: run_engine on REV's package, the result on stdout."""
    _die_with_parent()
    tree = Path(os.environ[BASELINE_TREE_ENV]).resolve()
    problem = baseline_api_problem(tree)
    if problem:
        _emit(ERROR_MARKER + problem)
        return 2
    if args.child_broker_pid:
        BROKER_PID.append(args.child_broker_pid)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    counter = LogCounter()
    logging.getLogger().addHandler(counter)
    send_topic, commands_topic = args.child_topics.split(",")
    targets = [int(t) for t in args.child_targets.split(",")]
    feed = ParentFeed(send_topic, commands_topic, targets, args.input == "phased")
    try:
        result = asyncio.run(
            run_engine(
                feed,
                args.broker,
                args.child_prefix,
                args.child_app_id,
                Path(args.child_work_dir),
                args.partitions,
                args.timeout,
                None,
            )
        )
    except Exception as exc:
        log.exception("the engine contender failed")
        _emit(f"{ERROR_MARKER}the engine contender failed on this commit: {exc!r}")
        return 1
    import deliverytrack

    extra = {
        "deliverytrack imported from": str(Path(deliverytrack.__file__ or "?").parent),
        **result.extra,
        "log records in the child": counter.summary(),
    }
    body = {
        "events": result.events,
        "seconds": result.seconds,
        "ok": result.ok,
        "note": result.note,
        "extra": extra,
    }
    _emit(RESULT_MARKER + orjson.dumps(body, default=str).decode())
    return 0


# --- profiling -------------------------------------------------------------------------------


class Profiler:
    """cProfile or pyinstrument, resumed/paused with the engine's timed windows."""

    def __init__(self, kind: str, out: Path | None) -> None:
        self.kind = kind
        self.out = out
        self.window = 0.0
        self._resumed = 0.0
        self._cprofile: cProfile.Profile | None = None
        self._pyinstrument: Any = None
        if kind == "cprofile":
            self._cprofile = cProfile.Profile()
        else:
            from pyinstrument import Profiler as Pyinstrument

            self._pyinstrument = Pyinstrument(interval=0.001, async_mode="disabled")

    def resume(self) -> None:
        self._resumed = time.perf_counter()
        if self._cprofile is not None:
            self._cprofile.enable()
        else:
            self._pyinstrument.start()

    def pause(self) -> None:
        if self._cprofile is not None:
            self._cprofile.disable()
        else:
            self._pyinstrument.stop()
        self.window += time.perf_counter() - self._resumed

    def report(self, top: int = 15) -> str:
        if self._cprofile is not None:
            if self.out is not None:
                self._cprofile.dump_stats(str(self.out))
            return self._report_cprofile(top)
        if self.out is not None:
            self.out.write_text(self._pyinstrument.output_text(unicode=False, color=False))
        return self._report_pyinstrument(top)

    def _report_cprofile(self, top: int) -> str:
        assert self._cprofile is not None
        stats = pstats.Stats(self._cprofile, stream=io.StringIO())
        raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
        total = self.window
        rows = [(func, calls, tt, ct) for func, (_, calls, tt, ct, _) in raw.items()]
        lines = [f"cProfile over the engine's timed windows ({total:.2f}s wall; % of that)"]
        for title, index in (("cumulative", 3), ("self", 2)):
            lines.append(f"\nTop {top} by {title} time:")
            lines.append(f"{'%':>6} {'seconds':>8} {'calls':>9}  function")
            for func, calls, tt, ct in sorted(rows, key=lambda r: r[index], reverse=True)[:top]:
                value = ct if index == 3 else tt
                lines.append(f"{100 * value / total:6.1f} {value:8.3f} {calls:9d}  {_fname(func)}")
        return "\n".join(lines)

    def _report_pyinstrument(self, top: int) -> str:
        session = self._pyinstrument.last_session
        root = session.root_frame(trim_stem=False) if session else None
        if root is None:
            return "(no samples)"
        total = root.time
        self_time: Counter[str] = Counter()
        cum_time: Counter[str] = Counter()

        def walk(frame: Any, stack: frozenset[str], parent: str) -> None:
            if frame.is_synthetic:  # "[self]" / "[await]" leaves: time spent in the parent
                self_time[parent] += frame.time
                return
            name = f"{frame.function} ({_short(frame.file_path or '')}:{frame.line_no})"
            if not frame.children:
                self_time[name] += frame.time
            inner = stack
            if name not in stack:
                cum_time[name] += frame.time
                inner = stack | {name}
            for child in frame.children:
                walk(child, inner, name)

        walk(root, frozenset(), "<root>")
        lines = [f"pyinstrument (sampling, 1 ms) over the engine's timed windows ({total:.2f}s)"]
        for title, counter in (("cumulative", cum_time), ("self", self_time)):
            lines.append(f"\nTop {top} by {title} time:")
            for name, value in counter.most_common(top):
                lines.append(f"{100 * value / total:6.1f} {value:8.3f}  {name}")
        return "\n".join(lines)


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _fname(func: tuple[str, int, str]) -> str:
    file, line, name = func
    return name if file == "~" else f"{name} ({_short(file)}:{line})"


# --- micro: per-call costs of the fold path, no Kafka ----------------------------------------


def micro(work: Workload, keys: int = 5_000) -> None:
    """Time each step the engine runs per event, in isolation (µs per call, best of 3)."""
    from aiokafka.producer.message_accumulator import BatchBuilder

    from deliverytrack.models.codec import encode_status_changed
    from deliverytrack.models.events import StatusChanged

    keys = min(keys, work.keys)
    sends = [value for _, value in work.sends[:keys]]
    per_key = work.commands[:keys]
    updates = [value for commands in per_key for _, value in commands[:2]]  # applied
    send_events = [decode_send_result(v) for v in sends]
    sent = [fold(None, e)[0] for e in send_events]
    delivered_events = [decode_command(c[0][1]) for c in per_key if c]
    delivered = [fold(r, e)[0] for r, e in zip(sent, delivered_events, strict=False)]
    clicked = [
        fold(r, decode_command(c[1][1]))[0] for r, c in zip(delivered, per_key, strict=False)
    ]
    refused_events = [decode_command(c[2][1]) for c in per_key if len(c) > 2]
    changes = [
        out
        for r, e in zip(sent, delivered_events, strict=False)
        for out in fold(r, e)[1]
        if isinstance(out, StatusChanged)
    ]
    raw_sent = [encode_record(r) for r in sent if r is not None]
    raw_clicked = [encode_record(r) for r in clicked if r is not None]
    partitions = list(range(4))
    key_bytes = [key for key, _ in work.sends[:keys]]

    def build_batch(values: list[bytes]) -> None:
        builder = BatchBuilder(1_048_576, 0)
        for key, value in zip(key_bytes, values, strict=False):
            if builder.append(key=key, value=value, timestamp=None) is None:
                builder = BatchBuilder(1_048_576, 0)

    status_values = [encode_status_changed(c) for c in changes]
    cases: list[tuple[str, int, Callable[[], object]]] = [
        (
            "decode_send_result (orjson + validate)",
            len(sends),
            lambda: [decode_send_result(v) for v in sends],
        ),
        (
            "decode_command (orjson + validate)",
            len(updates),
            lambda: [decode_command(v) for v in updates],
        ),
        (
            "fold(None, SendRecorded) -> SENT",
            len(send_events),
            lambda: [fold(None, e) for e in send_events],
        ),
        (
            "fold(SENT, UpdateStatus DELIVERED)",
            len(delivered_events),
            lambda: [fold(r, e) for r, e in zip(sent, delivered_events, strict=False)],
        ),
        (
            "fold(CLICKED, refused UpdateStatus)",
            len(refused_events),
            lambda: [fold(r, e) for r, e in zip(clicked, refused_events, strict=False)],
        ),
        (
            "encode_status_changed (record embedded)",
            len(changes),
            lambda: [encode_status_changed(c) for c in changes],
        ),
        (
            "decode_record (SENT, 1 history entry)",
            len(raw_sent),
            lambda: [decode_record(r) for r in raw_sent],
        ),
        (
            "decode_record (CLICKED, 3 history entries)",
            len(raw_clicked),
            lambda: [decode_record(r) for r in raw_clicked],
        ),
        (
            "encode_record (CLICKED)",
            len(clicked),
            lambda: [encode_record(r) for r in clicked if r is not None],
        ),
        (
            "partition_for (Kafka's murmur2) per output",
            len(key_bytes),
            lambda: [partition_for(k, partitions) for k in key_bytes],
        ),
        (
            "BatchBuilder.append (status change value)",
            len(status_values),
            lambda: build_batch(status_values),
        ),
    ]
    print(f"\nmicro: per-call cost of each step ({keys:,} keys of the workload, best of 3)")
    print(f"{'µs/call':>8}  step")
    for name, count, fn in cases:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - started)
        print(f"{1e6 * best / max(count, 1):8.1f}  {name}")
    sizes = [len(v) for v in status_values]
    print(
        f"sizes: status change value ~{statistics.fmean(sizes):.0f} B, record (CLICKED) "
        f"~{statistics.fmean(len(r) for r in raw_clicked):.0f} B"
    )
    subset = work.subset(4 * keys)
    for collector in ("gc on", "gc off"):
        sends_us, commands_us = offline_fold(subset, gc_enabled=collector == "gc on")
        print(
            f"engine.batch.fold offline ({collector}): {sends_us:.1f} µs/event on a batch "
            f"of {subset.keys:,} sends, {commands_us:.1f} µs/event on a batch of "
            f"{subset.events - subset.keys:,} commands"
        )


def offline_fold(work: Workload, gc_enabled: bool) -> tuple[float, float]:
    """The engine's own batch fold + store write on in-memory batches (no Kafka)."""
    from deliverytrack.streams.state.store import Position

    with tempfile.TemporaryDirectory(prefix="dt-micro-") as tmp:
        settings = Settings(app_id="micro", topic_prefix="micro.", data_dir=Path(tmp))
        engine = FoldEngine(settings)
        engine.partitions.attach(0, store := PartitionStore(Path(tmp) / "p0.db"))

        def records(topic: str, items: list[Item]) -> list[ConsumerRecord[bytes, bytes]]:
            return [
                ConsumerRecord(topic, 0, i, i, 0, k, v, None, len(k), len(v), ())
                for i, (k, v) in enumerate(items)
            ]

        batches = [
            records(engine.topics.send_results, work.sends),
            records(engine.topics.commands, [i for c in work.commands for i in c]),
        ]
        per_event = []
        gc.collect()
        if not gc_enabled:
            gc.disable()
        try:
            for batch in batches:
                started = time.perf_counter()
                changes = engine.batch.fold(engine.store(0), batch, [])
                store.write(changes, Position())
                per_event.append(1e6 * (time.perf_counter() - started) / len(batch))
        finally:
            gc.enable()
            store.close()
        return per_event[0], per_event[1]


# --- main ------------------------------------------------------------------------------------


def machine_facts(broker_desc: str, baseline: Baseline | None = None) -> list[str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for dist in ("faust-streaming", "aiokafka", "rocksdict", "pydantic", "orjson"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{dist} {metadata.version(dist)}")
    return [
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"cores: {os.cpu_count()} ({cpu}); usable {len(os.sched_getaffinity(0))}",
        f"python: {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()}",
        "packages: " + ", ".join(versions),
        f"deliverytrack: {_git_describe()}",
        *(
            [f"baseline: commit {baseline.short} (--baseline {baseline.rev}), tree {baseline.tree}"]
            if baseline is not None
            else []
        ),
        f"broker: {broker_desc}",
    ]


def _git_describe() -> str:
    """The commit measured, and whether the engine's sources differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "streams", "tables", "models"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown commit"
    return f"commit {head}" + (" + uncommitted changes in streams/tables/models" if dirty else "")


CONTENDERS = ("engine", "oracle", "baseline", "faust", "raw", "io", "io-ck")


def print_table(results: dict[tuple[str, str], list[Result]], runs: int) -> None:
    print()
    header = (
        f"{'contender':<32} {'input':<8} {'events':>9} {'seconds':>8} {'events/s':>9} "
        f"{'vs raw':>7}  notes"
    )
    print(header + (f"  (median of {runs} runs)" if runs > 1 else ""))
    print("-" * (len(header) + 10))
    for mode in ("phased", "backlog"):
        raw_rates = [r.rate for r in results.get(("raw", mode), []) if r.ok]
        raw_rate = statistics.median(raw_rates) if raw_rates else 0.0
        for name in CONTENDERS:
            all_rows = results.get((name, mode), [])
            rows = [r for r in all_rows if r.ok]
            if not rows:
                if all_rows:
                    print(f"{all_rows[0].contender:<32} {mode:<8} FAILED: {all_rows[0].note}")
                continue
            rate = statistics.median(r.rate for r in rows)
            seconds = statistics.median(r.seconds for r in rows)
            ratio = f"{rate / raw_rate:.2f}" if raw_rate else "-"
            extra = rows[0].extra
            notes = []
            for key in ("dead_letters", "rejected (unknown-message)"):
                if extra.get(key):
                    notes.append(f"{key.split(' ')[0]}={extra[key]:,}")
            head = f"{rows[0].contender:<32} {mode:<8} {rows[0].events:>9,}"
            print(f"{head} {seconds:>8.2f} {rate:>9,.0f} {ratio:>7}  {' '.join(notes)}")
            if len(rows) > 1:
                print(f"{'':<41} runs: " + ", ".join(f"{r.rate:,.0f}" for r in rows))


def print_baseline_ratio(results: dict[tuple[str, str], list[Result]], baseline: Baseline) -> None:
    """engine / baseline: the ratio of the median events/s, and run by run."""
    print_ratio(results, "engine", "baseline", f"engine / baseline {baseline.short}")
    print(
        f"baseline {baseline.short} = commit {baseline.commit} (--baseline {baseline.rev}): "
        f"{baseline.subject}"
    )


def print_ratio(
    results: dict[tuple[str, str], list[Result]], name: str, other_name: str, what: str
) -> None:
    """``name`` / ``other_name``: the ratio of the median events/s, and run by run."""
    for mode in ("phased", "backlog"):
        engine = results.get((name, mode), [])
        other = results.get((other_name, mode), [])
        if not engine or not other:
            continue
        label = f"{what} ({mode}, events/s)"
        engine_ok = [r.rate for r in engine if r.ok]
        other_ok = [r.rate for r in other if r.ok]
        failed = len(engine) - len(engine_ok) + len(other) - len(other_ok)
        if not engine_ok or not other_ok:
            print(f"{label}: - (failed)")
            continue
        ours, theirs = statistics.median(engine_ok), statistics.median(other_ok)
        text = f"{label}: {ours / theirs:.2f}x ({ours:,.0f} / {theirs:,.0f}, medians"
        if len(engine) > 1:
            pairs = zip(engine, other, strict=False)
            text += "; run by run " + ", ".join(
                f"{a.rate / b.rate:.2f}" if a.ok and b.ok else "-" for a, b in pairs
            )
        print(text + (f"; {failed} failed run(s) left out)" if failed else ")"))


@contextlib.contextmanager
def broker_for(args: argparse.Namespace, work_dir: Path) -> Iterator[tuple[str, str, Path | None]]:
    if args.broker:
        yield args.broker, f"external {args.broker}", None
        return
    from deliverytrack.streams.dev.kafka_broker import KAFKA_VERSION, KafkaBroker

    broker = KafkaBroker(work_dir / "kafka")
    started = time.perf_counter()
    broker.start()
    if broker.pid is not None:
        BROKER_PID.append(broker.pid)
    desc = (
        f"Apache Kafka {KAFKA_VERSION} KRaft single node on loopback "
        f"(started in {time.perf_counter() - started:.1f}s, heap {broker.heap})"
    )
    try:
        yield broker.url, desc, broker.log_path
    finally:
        broker.stop()


async def main_async(
    args: argparse.Namespace, broker: str, work_dir: Path, baseline: Baseline | None
) -> None:
    servers = servers_of(broker)
    known = ("raw", "io", "io-ck", "engine", "oracle", "baseline", "faust")
    only = [name for name in known if name in args.only]
    if "io-ck" in only and (why := confluent_missing()) is not None:
        only.remove("io-ck")
        print(
            f"io-ck (Kafka I/O floor, confluent-kafka) skipped: confluent_kafka is not importable "
            f"({why}); install it with: {CONFLUENT_INSTALL}"
        )
    modes = ["phased", "backlog"] if args.input == "both" else [args.input]
    started = time.perf_counter()
    work = generate(args.events, args.keys)
    send_size, cmd_size = work.value_sizes()
    print(
        f"workload: {work.events:,} events over {work.keys:,} keys (seed {SEED}): "
        f"{work.keys:,} SendRecorded ~{send_size:.0f} B, {work.events - work.keys:,} "
        f"UpdateStatus ~{cmd_size:.0f} B; a correct fold applies {work.expected()['applied']:,} "
        f"and refuses {work.expected()['refused']:,}; generated in "
        f"{time.perf_counter() - started:.1f}s"
    )
    faust_work = work.subset(args.faust_events) if args.faust_events else work
    outputs_of: Precomputed = {}
    if "io" in only or "io-ck" in only:
        started = time.perf_counter()
        outputs_of = precompute_outputs(work)
        print(f"I/O floor: outputs precomputed in {time.perf_counter() - started:.1f}s")
    tag = uuid.uuid4().hex[:6]

    # Backlog input: loaded once, shared by every contender and run.
    backlog: dict[str, Feed] = {}
    if "backlog" in modes:
        prefix = f"b{tag}-backlog."
        topics = Topics.from_prefix(prefix, "unused")
        backlog["all"] = Feed(servers, topics.send_results, topics.commands, work, False)
        print("backlog loaded:", await load_backlog(backlog["all"], args.partitions))
        if "faust" in only and faust_work is not work:
            fprefix = f"b{tag}-backlog-faust."
            ftopics = Topics.from_prefix(fprefix, "unused")
            backlog["faust"] = Feed(
                servers, ftopics.send_results, ftopics.commands, faust_work, False
            )
            print("backlog loaded (Faust):", await load_backlog(backlog["faust"], args.partitions))

    if not args.no_gc_freeze:
        # The generated workload stays in memory for the phased loads: keep its objects out of
        # the collector's scans so the in-process contenders do not pay for the harness.
        gc.collect()
        gc.freeze()
        print(f"gc.freeze(): {gc.get_freeze_count():,} harness objects frozen")
    counter = LogCounter()
    logging.getLogger().addHandler(counter)
    results: dict[tuple[str, str], list[Result]] = defaultdict(list)
    logs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    profiler = Profiler(args.profile, args.profile_out) if args.profile else None
    engine_child = this_checkout() if args.engine_in_child else None
    for run in range(args.runs):
        order = list(only)
        if run % 2 and "engine" in order and "baseline" in order:
            # Every other run the baseline goes first: neither is always second on the broker.
            a, b = order.index("engine"), order.index("baseline")
            order[a], order[b] = order[b], order[a]
        for mode in modes:
            for name in order:
                ident = f"{name}-{mode}-{run}-{tag}"
                prefix = f"b{tag}-backlog." if mode == "backlog" else f"b{ident}."
                if mode == "backlog":
                    feed = backlog["faust" if name == "faust" and "faust" in backlog else "all"]
                else:
                    topics = Topics.from_prefix(prefix, ident)
                    data = faust_work if name == "faust" else work
                    feed = Feed(servers, topics.send_results, topics.commands, data, True)
                counter.reset()
                if name == "raw":
                    coro = run_raw(feed, broker, ident, work_dir, args.partitions, args.timeout)
                elif name == "io":
                    coro = run_io_floor(
                        feed, broker, prefix, ident, args.partitions, args.timeout, outputs_of
                    )
                elif name == "io-ck":
                    coro = run_io_ck(
                        feed,
                        broker,
                        prefix,
                        ident,
                        args.partitions,
                        args.timeout,
                        outputs_of,
                        args.ck_reports,
                    )
                elif name == "engine" and engine_child is not None:
                    coro = run_baseline(
                        feed,
                        broker,
                        prefix,
                        ident,
                        work_dir,
                        args.partitions,
                        args.timeout,
                        engine_child,
                        "deliverytrack engine",
                    )
                elif name == "engine":
                    use_profiler = profiler if run == 0 and mode == modes[0] else None
                    coro = run_engine(
                        feed,
                        broker,
                        prefix,
                        ident,
                        work_dir,
                        args.partitions,
                        args.timeout,
                        use_profiler,
                    )
                elif name == "oracle":
                    coro = run_engine(
                        feed,
                        broker,
                        prefix,
                        ident,
                        work_dir,
                        args.partitions,
                        args.timeout,
                        None,
                        oracle=True,
                    )
                elif name == "baseline":
                    assert baseline is not None
                    coro = run_baseline(
                        feed,
                        broker,
                        prefix,
                        ident,
                        work_dir,
                        args.partitions,
                        args.timeout,
                        baseline,
                    )
                else:
                    coro = run_faust(
                        feed,
                        broker,
                        ident,
                        work_dir,
                        args.partitions,
                        args.timeout,
                        args.faust_work,
                    )
                result = await coro
                results[(name, mode)].append(result)
                logs[(name, mode)].append(counter.summary())
                status = "ok" if result.ok else f"FAILED ({result.note})"
                print(
                    f"run {run + 1}/{args.runs} {mode:<7} {result.contender}: "
                    f"{result.events:,} events in {result.seconds:.2f}s = "
                    f"{result.rate:,.0f} events/s [{status}]",
                    flush=True,
                )
    logging.getLogger().removeHandler(counter)

    print_table(results, args.runs)
    if baseline is not None:
        print()
        print_baseline_ratio(results, baseline)
    if "oracle" in only and "engine" in only:
        print()
        print_ratio(results, "oracle", "engine", "oracle / engine: the ceiling of a faster fold")
    print(
        "\ninput 'phased': sends loaded, folded (window 1), then commands loaded while the "
        "contender's commands partitions are paused, folded (window 2); seconds = sum of "
        "windows.\ninput 'backlog': both topics loaded before the contender starts; one window."
    )
    if "faust" in only and faust_work is not work:
        print(
            f"Faust ran on {faust_work.events:,} events over {faust_work.keys:,} keys (the first "
            f"keys of the same workload, same mix; --faust-events {args.faust_events}); the "
            f"others on {work.events:,}."
        )
    for (name, mode), rows in results.items():
        for index, result in enumerate(rows):
            print(f"\n{result.contender} [{mode}] run {index + 1}:")
            extra = dict(result.extra)
            # The baseline engine logs in its child: its records are counted there.
            child_logs = extra.pop("log records in the child", None)
            for key, value in extra.items():
                print(f"  {key}: {value}")
            summary = child_logs or logs[(name, mode)][index]
            where = "the child process" if child_logs else "this process"
            print(f"  log records in {where}: {summary['levels']}")
            if summary["events"]:
                print(f"  group/assignment log lines: {summary['events']}")
            for logger_name, samples in summary["warnings"].items():
                for sample in samples:
                    print(f"  log {logger_name}: {sample}")
    if profiler is not None:
        print()
        print(profiler.report())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--faust-events",
        type=int,
        default=50_000,
        help="run the (slow) Faust agent on the first keys holding this many events; 0 = all",
    )
    parser.add_argument(
        "--faust-work",
        choices=("fold", "json"),
        default="fold",
        help="Faust per-event work: the real fold (default) or a plain JSON read-modify-write",
    )
    parser.add_argument(
        "--broker", help="kafka://host:port of a running broker (else one is started in a temp dir)"
    )
    parser.add_argument(
        "--only",
        default="engine,faust,raw",
        help="contenders, comma-separated: engine, oracle (the engine with its fold looked up: "
        "the ceiling of a faster fold), faust, raw, io (Kafka I/O floor), io-ck (the same with "
        "confluent-kafka; skipped if not installed), baseline (needs --baseline)",
    )
    parser.add_argument(
        "--ck-reports",
        choices=("all", "errors"),
        default="errors",
        help="io-ck: a Python delivery callback only for failures (delivery.report.only.error, "
        "the default: ~1 us/event less) or for every message (all); acks are awaited with "
        "flush() either way",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run the engine of commit REV (its deliverytrack package, in a child process) "
        "and print engine / baseline; adds 'baseline' to --only",
    )
    parser.add_argument(
        "--input",
        choices=("phased", "backlog", "both"),
        default="phased",
        help="how the input is pre-loaded (see the module docstring)",
    )
    parser.add_argument(
        "--engine-in-child",
        action="store_true",
        help="run today's engine in a child process too, as the baseline runs (same process "
        "layout for both; no --profile)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="per contender, seconds")
    parser.add_argument(
        "--profile",
        choices=("cprofile", "pyinstrument"),
        help="profile the engine's timed windows (first run, first input mode)",
    )
    parser.add_argument("--profile-out", type=Path, help="write the raw profile here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, state)")
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="do not gc.freeze() the harness's objects before the contenders run",
    )
    parser.add_argument(
        "--micro", action="store_true", help="only time the fold path's steps in isolation"
    )
    # internal: the Faust child process
    parser.add_argument("--faust-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--faust-topics", help=argparse.SUPPRESS)
    parser.add_argument("--faust-app-id", help=argparse.SUPPRESS)
    parser.add_argument("--faust-datadir", help=argparse.SUPPRESS)
    parser.add_argument("--faust-targets", help=argparse.SUPPRESS)
    parser.add_argument("--faust-broker-pid", type=int, default=0, help=argparse.SUPPRESS)
    # internal: the --baseline child process
    parser.add_argument("--baseline-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-topics", help=argparse.SUPPRESS)
    parser.add_argument("--child-prefix", help=argparse.SUPPRESS)
    parser.add_argument("--child-app-id", help=argparse.SUPPRESS)
    parser.add_argument("--child-work-dir", help=argparse.SUPPRESS)
    parser.add_argument("--child-targets", help=argparse.SUPPRESS)
    parser.add_argument("--child-broker-pid", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.faust_child:
        faust_child(args)
        return 0
    if args.baseline_child:
        if not BASELINE_CHILD:
            parser.error(f"--baseline-child is started by --baseline (needs {BASELINE_TREE_ENV})")
        return baseline_child(args)
    args.only = [name for name in args.only.split(",") if name]
    unknown = sorted(set(args.only) - set(CONTENDERS))
    if unknown:
        parser.error(f"--only: unknown contender(s) {', '.join(unknown)}; known: {CONTENDERS}")
    if args.baseline and "baseline" not in args.only:
        args.only.append("baseline")
    if "baseline" in args.only and not args.baseline:
        parser.error("--only baseline needs --baseline REV")
    if args.engine_in_child and args.profile:
        parser.error("--profile profiles the engine in this process: not with --engine-in-child")
    if args.engine_in_child and "oracle" in args.only:
        parser.error("oracle runs in this process: compare it with the engine in this process")
    if args.micro:
        micro(generate(min(args.events, 4 * args.keys), args.keys))
        return 0

    work_dir = Path(tempfile.mkdtemp(prefix="dt-bench-"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        filename=str(work_dir / "bench.log"),
    )
    # SIGTERM unwinds like an error: the finally blocks stop the children and the broker and
    # remove the temp dirs.
    signal.signal(signal.SIGTERM, _terminated)
    try:
        with contextlib.ExitStack() as stack:
            baseline = stack.enter_context(baseline_tree(args.baseline)) if args.baseline else None
            broker, desc, broker_log = stack.enter_context(broker_for(args, work_dir))
            for line in machine_facts(desc, baseline):
                print(line)
            print(f"temp dir: {work_dir}", flush=True)
            asyncio.run(main_async(args, broker, work_dir, baseline))
            if broker_log is not None and broker_log.exists():
                lines = broker_log.read_text(errors="replace").splitlines()
                errors = [line for line in lines if "] ERROR " in line or "] WARN " in line]
                print(f"\nbroker log: {len(errors)} WARN/ERROR lines")
                for line in errors[:10]:
                    print("  " + line[:240])
    finally:
        if args.keep:
            print(f"kept {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    return 0


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
