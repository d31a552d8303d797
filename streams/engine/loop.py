"""The fold engine: the only writer of the records table.

Why not a stock Faust agent + Table: measured here, a Faust agent doing ``table[k] = v`` per
event folds 2,600-6,100 events/s (see bench/README.md); the tracking core needs >= 60,000. So the
fold runs as a batched consumer inside the Faust worker (a ``mode.Service`` the app starts):

1. ``getmany`` a batch from the input topics (all keyed by messageId, co-partitioned, assigned
   with the range assignor so partition p of every input lands on the same worker);
2. decode each value (bad input -> dead-letters with the original bytes and the reason),
   ``fold`` it onto the record (read once per key per batch), collect what the fold emitted;
3. publish status changes and dead letters and wait for the broker's acks;
4. publish the latest value of each changed key once to the compacted changelog, then a
   position record (the source offsets the changelog reflects), and wait for the acks;
5. write records, due-index changes and offsets to the partition's RocksDB in one WriteBatch;
6. commit the consumer offsets (informational: local RocksDB, then the changelog, are the
   source of truth for where to resume).

A crash between any two steps re-reads the uncommitted events; the fold drops the ones already
applied (their eventIds are on the record) and re-publishes nothing twice that was acked after
the state that implies it. Status changes are acked before the state that implies them, so every
transition is published at least once with a stable eventId.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord, TopicPartition

from deliverytrack.models.codec import (
    Marker,
    decode_command,
    decode_correlated_report,
    decode_correlation_state,
    decode_due_check,
    decode_link_or_expiry,
    decode_marker,
    decode_observation,
    decode_provider_report,
    decode_record,
    decode_send_result,
    encode,
    encode_record,
    encode_status_changed,
)
from deliverytrack.models.correlation import CorrelationState, SourceRef
from deliverytrack.models.events import (
    CorrelationEvent,
    DeadLetter,
    DueCheckIssued,
    EventRejected,
    FailoverRequested,
    HoldExpiryDue,
    MessageEvent,
    PollRequested,
    ProviderIdLinked,
    ProviderReportReceived,
    RecordDeleted,
    RecordExpiryDue,
    RecordFailoverOutcome,
    ReportCorrelated,
    StatusChanged,
    provider_key,
)
from deliverytrack.models.policy import PollingPolicy
from deliverytrack.models.records import TrackingRecord
from deliverytrack.models.settings import Settings
from deliverytrack.streams.boundary import Refused, Source, check_size, dead_letter, refusal
from deliverytrack.streams.engine.recent import RecentOutputs
from deliverytrack.streams.kafka.clients import kafka_client_kwargs
from deliverytrack.streams.kafka.membership import Membership, Rebalance, query_url
from deliverytrack.streams.kafka.topic_admin import ensure_topics
from deliverytrack.streams.metrics import Metrics
from deliverytrack.streams.state.memory import HeapTrimmer, RocksMemory, rss_bytes, tune_heap
from deliverytrack.streams.state.store import (
    CorrelationChange,
    MarkerChange,
    PartitionStore,
    Position,
    StoreError,
)
from deliverytrack.streams.supervision import TaskFailure
from deliverytrack.streams.topics import Topics
from deliverytrack.tables.correlation import correlate
from deliverytrack.tables.deletion import fold_marked
from deliverytrack.tables.due_index import epoch_ms, from_epoch_ms
from deliverytrack.tables.pii import mask_phone_text, protect_report

log = logging.getLogger(__name__)

POSITION_KEY = b"\x00position"
"""Changelog key of the position record; messageIds may not start with NUL."""
CORRELATION_PREFIX = b"\x00c:"
"""Changelog keys of correlation states: this prefix + providerId:providerMessageId."""
MARKER_PREFIX = b"\x00z:"
"""Changelog keys of deletion markers: this prefix + messageId."""

Decoder = Callable[[bytes | None], MessageEvent]
CorrelationDecoder = Callable[[bytes | None], CorrelationEvent]
Change = tuple[TrackingRecord | None, TrackingRecord | None, bytes | None]
"""(record before the batch, record after it, the JSON of the latter)."""


GC_PAUSE_LIMIT_S = 5.0
"""The longest a batch keeps the cyclic GC paused (see gc_paused)."""


@contextmanager
def gc_paused(limit_s: float | None = None) -> Iterator[None]:
    """Pause the cyclic GC for a batch's synchronous work (turned back on even if it raises).

    A batch allocates millions of short-lived objects without reference cycles (refcounting
    frees them). With the collector on, every 50,000 allocations it scanned whatever was alive
    at that moment (the batch's records, outputs), promoting it to older generations to be
    scanned again: 7-9 % of the engine's time at 200,000 events. Paused, the next collection
    after the batch sees only what survived it. Nothing the collector has to free is lost,
    only collected a batch later. The engine holds it over a whole batch, awaits included
    (other tasks, poller and web, leave their cyclic garbage to the end of the batch), with
    ``limit_s``: a batch that waits longer (a broker away: the idempotent producer retries
    without end) turns the collector back on at that point."""
    enabled = gc.isenabled()
    gc.disable()
    timer = None
    if enabled and limit_s is not None:
        timer = asyncio.get_running_loop().call_later(limit_s, gc.enable)
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
        if enabled:
            gc.enable()


@dataclass(slots=True)
class EngineStats:
    events: int = 0
    applied: int = 0
    status_changes: int = 0
    dead_letters: int = 0
    batches: int = 0
    changelog_writes: int = 0
    restored: int = 0
    poll_requests: int = 0
    due_checks: int = 0
    due_scans: int = 0
    reports: int = 0
    reports_correlated: int = 0
    hold_expiries: int = 0
    expiries: int = 0
    deletions: int = 0


@dataclass(slots=True)
class _Output:
    topic: str
    key: bytes | None
    value: bytes
    # The input partition, when the key is the input's key (the messageId): the output lands on
    # the same partition number if its topic has the input's partition count (no murmur2).
    partition: int | None = None


def _source_ref(msg: ConsumerRecord[bytes, bytes], value: bytes | None = None) -> SourceRef:
    """Where a held input came from, with its bytes (for its dead letter if it expires):
    ``value`` if given, else the input's own."""
    value = msg.value if value is None else value
    return SourceRef(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        value_base64=None if value is None else base64.b64encode(value).decode(),
    )


def _protected(
    msg: ConsumerRecord[bytes, bytes], event: CorrelationEvent, settings: Settings
) -> tuple[CorrelationEvent, Callable[[], SourceRef]]:
    """A report (from the ingress, or published by an app) as the correlator may store and
    forward it (``tables.pii.protect_report``), and its source for a hold. A protected report
    is held with its own bytes, not the input's: those may carry plain numbers, also in fields
    the tolerant reader dropped."""
    if not isinstance(event, ProviderReportReceived):
        return event, lambda: _source_ref(msg)
    report = protect_report(event, settings.pii, settings.webhook_raw)
    if report is event and not settings.pii.protects_plain:
        return event, lambda: _source_ref(msg)
    return report, lambda: _source_ref(msg, encode(report))


S = TypeVar("S")


def _read_state(decode: Callable[[bytes], S], raw: bytes) -> S:
    """Decode state read back from the store; a value that does not decode (written by an
    older version, or damaged) refuses the input that needs it, not the worker."""
    try:
        return decode(raw)
    except Exception as exc:  # noqa: BLE001 - whatever it is, it is this key's problem
        raise Refused("unreadable-state", f"stored state does not decode: {exc}") from exc


def _stored(read: Callable[[str], S], key: str) -> S:
    """A store read for one input: RocksDB failing is the worker's problem (StoreError), a
    value that does not decode is the input's (see _read_state)."""
    try:
        return read(key)
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever it is, it is this key's problem
        raise Refused(
            "unreadable-state", f"stored state of {key!r} does not decode: {exc}"
        ) from exc


@dataclass(slots=True)
class _FoldStep:
    """What one input did, not yet kept (see FoldEngine._fold_one)."""

    message_id: str
    record: TrackingRecord | None
    new: TrackingRecord | None
    marker: Marker | None
    new_marker: Marker | None
    outputs: list[_Output] = field(default_factory=list)
    encoded: tuple[TrackingRecord, bytes] | None = None
    marker_json: bytes | None = None
    status_changes: int = 0
    poll_requests: int = 0
    deletions: int = 0


class _FoldBatch:
    """One partition's records and markers as a batch has changed them so far."""

    __slots__ = (
        "store",
        "before",
        "current",
        "changed",
        "marks_before",
        "marks",
        "marks_json",
        "encoded",
    )

    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self.before: dict[str, TrackingRecord | None] = {}
        self.current: dict[str, TrackingRecord | None] = {}
        self.changed: set[str] = set()
        self.marks_before: dict[str, Marker | None] = {}
        self.marks: dict[str, Marker | None] = {}
        self.marks_json: dict[str, bytes | None] = {}
        self.encoded: dict[str, tuple[TrackingRecord, bytes]] = {}

    def record(self, message_id: str) -> TrackingRecord | None:
        if message_id not in self.current:
            record = _stored(self.store.get, message_id)
            self.before[message_id] = self.current[message_id] = record
        return self.current[message_id]

    def marker(self, message_id: str) -> Marker | None:
        if message_id not in self.marks:
            mark = _stored(self.store.get_marker, message_id)
            self.marks_before[message_id] = self.marks[message_id] = mark
        return self.marks[message_id]

    def keep(self, step: _FoldStep) -> None:
        message_id = step.message_id
        if step.new is not step.record:
            self.current[message_id] = step.new
            self.changed.add(message_id)
        if step.encoded is not None:
            self.encoded[message_id] = step.encoded
        if step.new_marker is not step.marker:
            self.marks_before.setdefault(message_id, step.marker)  # a record had no marker
            self.marks[message_id] = step.new_marker
            self.marks_json[message_id] = step.marker_json


class FoldEngine:
    """Consumes the fold inputs, owns the RocksDB stores of its assigned partitions."""

    def __init__(
        self, settings: Settings, topics: Topics | None = None, *, correlate: bool = True
    ) -> None:
        """``correlate=False`` folds the records only (a replay reads the recorded
        correlated reports instead of correlating the webhooks again)."""
        self.settings = settings
        self.topics = topics or Topics.from_prefix(settings.topic_prefix, settings.app_id)
        self.policy: PollingPolicy = settings.fold_policy
        self.stats = EngineStats()
        self.metrics = Metrics()  # GET /metrics (streams/metrics.py)
        # The last status changes and dead letters published, for the dashboard (GET /recent).
        self.recent = RecentOutputs(self.topics.status_changes, self.topics.dead_letters)
        # Commands the fold derives (failover outcomes) go to the commands topic; a replay,
        # which reads the recorded ones, does not write them again.
        self.reroute_commands = True
        self.group_id = f"{settings.app_id}.fold"
        self._state_dir = Path(settings.data_dir) / settings.app_id / "records"
        self._stores: dict[int, PartitionStore] = {}
        # Partitions whose store has caught up with the changelog: safe to answer queries.
        self.ready_partitions: set[int] = set()
        self.membership = Membership(query_url(settings))
        self._positions: dict[int, Position] = {}
        self._decoders: dict[str, Decoder] = {
            self.topics.send_results: decode_send_result,
            self.topics.commands: decode_command,
            self.topics.due_checks: decode_due_check,
            self.topics.observations: decode_observation,
            self.topics.correlated_reports: decode_correlated_report,
        }
        self._correlation_decoders: dict[str, CorrelationDecoder] = (
            {
                self.topics.provider_ids: decode_link_or_expiry,
                self.topics.provider_webhooks: decode_provider_report,
            }
            if correlate
            else {}
        )
        inputs = (*self.topics.fold_inputs, *self._correlation_decoders)
        self._rank = {topic: rank for rank, topic in enumerate(inputs)}
        self._emitted_due: dict[tuple[str, int, str], float] = {}
        self._buffer: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = defaultdict(list)
        self._last_ts: dict[TopicPartition, int] = {}
        self._lock = asyncio.Lock()
        self._partitioner = DefaultPartitioner()
        self._partitions_of: dict[str, list[int]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.ready = asyncio.Event()
        # The fold loop's error, if it ends on one: the worker must restart (FoldService).
        self.failure = TaskFailure("fold")
        # The largest record (or state) the fold writes: the setting, or less when the topics
        # it writes take less (see start).
        self.record_limit = settings.max_record_bytes
        # A partition restore that failed (in the rebalance listener, whose errors aiokafka
        # swallows): the loop raises it, the worker restarts.
        self._restore_error: Exception | None = None
        # What bounds the worker's memory (streams/state/memory.py): one RocksDB budget for all its
        # stores, and the C heap's freed pages returned after batches.
        self.rocks_memory = RocksMemory(settings.rocksdb_memory_mb)
        self.heap = HeapTrimmer()

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        topic_limit = await ensure_topics(settings, self.topics)
        self.record_limit = settings.max_record_bytes
        if topic_limit is not None and topic_limit - 65_536 < self.record_limit:
            # Existing topics take less than the settings would write: refuse (dead-letter) the
            # inputs whose record would not fit, instead of failing the batch on every restart.
            self.record_limit = max(4_096, topic_limit - 65_536)
            log.warning(
                "fold: topics take records up to max.message.bytes=%s; records over %s bytes "
                "are refused (record-too-large). Raise max.message.bytes on the topics to %s "
                "for DELIVERYTRACK_MAX_RECORD_BYTES=%s",
                topic_limit,
                self.record_limit,
                settings.max_message_bytes,
                settings.max_record_bytes,
            )
        self._producer = AIOKafkaProducer(
            **kafka_client_kwargs(settings),
            client_id=f"{settings.app_id}-fold",
            acks="all",
            enable_idempotence=True,
            linger_ms=settings.producer_linger_ms,
            compression_type=None
            if settings.producer_compression == "none"
            else settings.producer_compression,
            max_batch_size=min(1_048_576, (topic_limit or 1_048_576 + 1_024) - 1_024),
            max_request_size=max(4_194_304, settings.max_message_bytes + 65_536),
        )
        self._consumer = AIOKafkaConsumer(
            **kafka_client_kwargs(settings),
            client_id=f"{settings.app_id}-fold",
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            partition_assignment_strategy=(self.membership.assignor(),),
            session_timeout_ms=settings.consumer_session_timeout_ms,
            heartbeat_interval_ms=settings.consumer_heartbeat_interval_ms,
            max_partition_fetch_bytes=max(4_194_304, 2 * settings.max_message_bytes),
            fetch_max_bytes=16_777_216,
            max_poll_interval_ms=600_000,
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
        )
        tune_heap()
        await self._producer.start()
        await self._partitions(self.topics.send_results)
        self._consumer.subscribe(
            topics=list(self._rank), listener=Rebalance(self._on_revoked, self._on_assigned)
        )
        await self._consumer.start()
        # The fold allocates many short-lived objects per event; the default gen-0 threshold
        # (700) ran the cyclic GC ~3,000 times per 200,000 events (12-14 % of the time).
        gc.freeze()
        gc.set_threshold(max(gc.get_threshold()[0], 50_000), 20, 20)
        self._task = asyncio.create_task(self._run(), name="fold-engine")
        self.failure.watch(self._task, lambda: self._stopping)

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=30)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            except Exception:  # noqa: S110 - logged by self.failure; close the stores anyway
                pass
        if self._consumer is not None:
            await self._consumer.stop()
        async with self._lock:
            for store in self._stores.values():
                store.close()
            self._stores.clear()
            self.ready_partitions.clear()
        if self._producer is not None:
            await self._producer.stop()

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("the fold engine is not started")
        return self._producer

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the fold engine is not started")
        return self._consumer

    def memory(self) -> dict[str, Any]:
        """What this worker holds (/health's ``memory``): RSS, the record cache, RocksDB's
        shared budget and use, and the heap trims so far."""
        return {
            "rssBytes": rss_bytes(),
            "recordCacheRecords": sum(s.cached_records for s in list(self._stores.values())),
            "recordCacheLimit": self.settings.record_cache_size,
            "rocksdb": self.rocks_memory.usage(),
            "heapTrims": self.heap.trims,
        }

    def held_commands(self) -> int:
        """Commands waiting for their send result on this worker's partitions."""
        return sum(store.held_commands() for store in list(self._stores.values()))

    @property
    def assigned_partitions(self) -> list[int]:
        return sorted(self._stores)

    def applied_offsets(self) -> dict[TopicPartition, int]:
        """Next offset to fold per input topic-partition, as far as the written state (the
        partition stores) reflects; a batch in flight is not counted until it is written."""
        offsets: dict[TopicPartition, int] = {}
        for partition, store in list(self._stores.items()):
            position = store.position()
            if position is not None:
                for topic, offset in position.offsets.items():
                    offsets[TopicPartition(topic, partition)] = offset
        return offsets

    def store(self, partition: int) -> PartitionStore | None:
        return self._stores.get(partition)

    @property
    def partition_count(self) -> int:
        known = self._partitions_of.get(self.topics.send_results)
        return len(known) if known else self.settings.partitions

    def partition_of(self, message_id: str) -> int:
        """The partition a messageId's events (and record) live in."""
        partitions = self._partitions_of.get(self.topics.send_results) or list(
            range(self.settings.partitions)
        )
        key = message_id.encode()
        partition: int = self._partitioner(key, partitions, partitions)
        return partition

    def get_record(self, message_id: str) -> TrackingRecord | None:
        """The record, if its partition is assigned to this worker."""
        store = self._stores.get(self.partition_of(message_id))
        return None if store is None else store.get(message_id)

    # --- due checks (called by the timer; publishes events, never writes the table) ----------

    def collect_due_checks(self, now: datetime) -> list[tuple[bytes, bytes]]:
        """Scan the due index of the partitions this worker owns, oldest first: up to
        ``batchSize`` (key, DueCheckIssued JSON) pairs. Reads only; O(records due)."""
        return [self._due_check(now, due) for due in self._scan_due(now)]

    def _scan_due(self, now: datetime) -> list[tuple[int, str]]:
        """Up to ``batchSize`` due entries, oldest first, passing over the ones whose check is
        already in flight (emitted, not yet folded): at 1,000 polls/s there are more of those
        than ``batchSize``, and counting them would stall the scan behind them. The entries
        skipped are bounded by the number in flight, so a tick stays O(records due)."""
        limit = self.policy.batch_size
        emitted = self._emitted_due

        def in_flight(due_ms: int, message_id: str) -> bool:
            return ("due", due_ms, message_id) in emitted

        found: list[tuple[int, str]] = []
        for store in list(self._stores.values()):
            found.extend(store.due(now, limit, in_flight, len(emitted)))
        found.sort()
        return found[:limit]

    def _due_check(self, now: datetime, due: tuple[int, str]) -> tuple[bytes, bytes]:
        due_ms, message_id = due
        event = DueCheckIssued(
            event_id=f"{message_id}:due:{due_ms}:{epoch_ms(now)}",
            message_id=message_id,
            due_at=from_epoch_ms(due_ms),
            issued_at=now,
        )
        return message_id.encode(), encode(event)

    def collect_hold_expiries(self, now: datetime) -> list[tuple[bytes, bytes]]:
        """(provider key, HoldExpiryDue JSON) for held reports past their holding time."""
        return [pair for due in self._scan_holds(now) if (pair := self._hold_expiry(now, due))]

    def _scan_holds(self, now: datetime) -> list[tuple[int, str]]:
        limit = self.policy.batch_size
        found: list[tuple[int, str]] = []
        for store in list(self._stores.values()):
            found.extend(store.expired_holds(now, limit))
        found.sort()
        return found[:limit]

    def _hold_expiry(self, now: datetime, due: tuple[int, str]) -> tuple[bytes, bytes] | None:
        deadline_ms, key = due
        state = None
        for store in list(self._stores.values()):
            state = state or store.get_correlation(key)
        if state is None:
            return None
        event = HoldExpiryDue(
            event_id=f"{key}:expiry:{deadline_ms}:{epoch_ms(now)}",
            provider_id=state.provider_id,
            provider_message_id=state.provider_message_id,
            issued_at=now,
        )
        return key.encode(), encode(event)

    def _recent_emissions(self) -> tuple[float, dict[tuple[str, int, str], float]]:
        """(now on the monotonic clock, what the timers emitted less than a lease ago)."""
        clock = time.monotonic()
        horizon = clock - self.policy.lease_ms / 1000
        emitted = self._emitted_due
        for marker in [marker for marker, at in emitted.items() if at < horizon]:
            del emitted[marker]
        return clock, emitted

    async def emit_due_checks(self, now: datetime) -> int:
        """Publish the due checks and hold expiries of this tick (the timer's job; it never
        writes the table).

        A check the fold has not consumed yet would be found due again by the next tick; the
        fold would drop the repeat as stale, but it costs a round trip, so one emitted less
        than a lease ago (same due time, same key) is not emitted again."""
        self.stats.due_scans += 1
        clock, emitted = self._recent_emissions()
        outputs: list[_Output] = []
        for due in self._scan_due(now):  # passes over the checks emitted a lease ago or less
            emitted[("due", *due)] = clock
            key, value = self._due_check(now, due)
            outputs.append(_Output(self.topics.due_checks, key, value))
        checks = len(outputs)
        for due in self._scan_holds(now):
            if ("hold", *due) not in emitted and (pair := self._hold_expiry(now, due)):
                emitted[("hold", *due)] = clock
                outputs.append(_Output(self.topics.provider_ids, *pair))
        await self._publish(outputs)
        self.stats.due_checks += checks
        return checks

    # --- expiries (called by the retention timer; publishes events, never writes) ----------

    def _scan_expiries(self, now: datetime) -> list[tuple[int, str]]:
        """(expiry ms, messageId) of records and deletion markers past their time, oldest
        first, at most ``scanBatchSize``: O(records expired), not O(records kept)."""
        limit = self.policy.retention.scan_batch_size
        found: list[tuple[int, str]] = []
        for store in list(self._stores.values()):
            found.extend(store.expired(now, limit))
            found.extend(store.forgettable_markers(now, limit))
        found.sort()
        return found[:limit]

    async def emit_expiries(self, now: datetime) -> int:
        """Publish ``RecordExpiryDue`` events (on the due-checks topic, keyed by messageId)
        for this worker's expired records and markers; the fold deletes them. Like due checks,
        one emitted less than a lease ago is not emitted again."""
        clock, emitted = self._recent_emissions()
        outputs: list[_Output] = []
        for expire_ms, message_id in self._scan_expiries(now):
            if ("expire", expire_ms, message_id) in emitted:
                continue
            emitted[("expire", expire_ms, message_id)] = clock
            event = RecordExpiryDue(
                event_id=f"expire:{message_id}:{expire_ms}",
                message_id=message_id,
                expire_at=from_epoch_ms(expire_ms),
                issued_at=now,
            )
            outputs.append(_Output(self.topics.due_checks, message_id.encode(), encode(event)))
        await self._publish(outputs)
        self.stats.expiries += len(outputs)
        return len(outputs)

    # --- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        timeout_ms = self.settings.fold_batch_timeout_ms
        max_records = self.settings.fold_batch_max_records
        while not self._stopping:
            if self._restore_error is not None:
                raise self._restore_error
            self.heap.maybe_trim()
            try:
                fetched = await self.consumer.getmany(
                    timeout_ms=timeout_ms, max_records=max_records
                )
            except KafkaError as exc:
                log.warning("fold: fetch failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            async with self._lock:
                self._buffer_fetched(fetched)
                fetched.clear()
                batch = await self._release()
                if not batch:
                    continue
                # The collector stays paused for the whole batch and runs after it, when the
                # batch's inputs, events and outputs are already freed (see gc_paused).
                with gc_paused(limit_s=GC_PAUSE_LIMIT_S):
                    started = time.perf_counter()
                    offsets = await self._process(batch)
                    self.metrics.batch_folded(batch, started)
                    del batch
            await self._commit(offsets)
            self.heap.freed()  # the batch's buffers are freed: their pages go back (below)

    def _buffer_fetched(
        self, fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        for tp, records in fetched.items():
            if tp.partition in self._stores and records:
                self._buffer[tp].extend(records)
                self._last_ts[tp] = records[-1].timestamp

    async def _release(self) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """The buffered records that may be folded now, in the order replay would fold them.

        A record's events arrive on several topics; folding each batch in timestamp order is
        not enough, because one topic's fetch can run ahead of another's. So a partition's
        records are released only up to its watermark: the oldest point up to which every
        input topic of that partition is known, i.e. the timestamp of the last record fetched
        from a topic that has more, or (for a topic read to its end) the time of that fetch
        less ``orderingMarginMs``. Topics are created with LogAppendTime, so timestamps are
        the broker's and replaying the topics sorts them the same way."""
        consumer = self.consumer
        margin = self.settings.ordering_margin_ms
        cap = 4 * self.settings.fold_batch_max_records
        released: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        ordering: dict[int, tuple[float, int]] = {}  # /metrics: watermark, inputs still held
        for partition in list(self._stores):
            tps = [TopicPartition(topic, partition) for topic in self._rank]
            watermark: float = float("inf")
            for tp in tps:
                watermark = min(watermark, await self._frontier(consumer, tp, margin))
            pending = sum(len(self._buffer.get(tp, ())) for tp in tps)
            frontier = watermark
            if pending > cap:
                log.warning(
                    "fold: partition %s has %s records waiting for the watermark; folding "
                    "them in timestamp order without it",
                    partition,
                    pending,
                )
                watermark = float("inf")
            for tp in tps:
                buffered = self._buffer.get(tp)
                if not buffered:
                    continue
                cut = 0
                while cut < len(buffered) and buffered[cut].timestamp < watermark:
                    cut += 1
                if cut:
                    released[tp] = buffered[:cut]
                    del buffered[:cut]
                    pending -= cut
            ordering[partition] = (frontier, pending)
        self.metrics.ordering_released(ordering)
        return released

    async def _frontier(self, consumer: AIOKafkaConsumer, tp: TopicPartition, margin: int) -> float:
        """Timestamp below which every record of ``tp`` has been fetched. A paused partition
        (an operator or a benchmark holding one input back) does not hold the others back."""
        if tp in consumer.paused():
            return float("inf")
        end = consumer.last_stable_offset(tp)
        if end is None:
            end = consumer.highwater(tp)
        if end is None:
            return float("-inf")  # never fetched yet: nothing known
        if await consumer.position(tp) >= end:
            polled = consumer.last_poll_timestamp(tp)
            return float("-inf") if polled is None else float(polled - margin)
        last = self._last_ts.get(tp)
        return float("-inf") if last is None else float(last)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Harmless: the local store and the changelog record where to resume.
            log.info("fold: offset commit skipped (%s)", exc)

    async def _process(
        self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> dict[TopicPartition, int]:
        by_partition: dict[int, list[ConsumerRecord[bytes, bytes]]] = defaultdict(list)
        for tp, records in batch.items():
            if tp.partition in self._stores:  # skip anything fetched before a revoke
                by_partition[tp.partition].extend(records)
        outputs: list[_Output] = []
        pending: dict[int, dict[str, Change]] = {}
        linked: dict[int, dict[str, CorrelationChange]] = {}
        markers: dict[int, dict[str, MarkerChange]] = defaultdict(dict)
        correlation_topics = self._correlation_decoders
        with gc_paused():
            for partition, records in by_partition.items():
                rank = self._rank
                records.sort(key=lambda r: (r.timestamp, rank[r.topic], r.offset))
                reports = [r for r in records if r.topic in correlation_topics]
                if reports:
                    linked[partition] = self._correlate_partition(partition, reports, outputs)
                    records_for_fold = [r for r in records if r.topic not in correlation_topics]
                else:
                    records_for_fold = records
                pending[partition] = self._fold_partition(
                    partition, records_for_fold, outputs, markers[partition]
                )
                position = self._positions[partition]
                for record in records:
                    position.offsets[record.topic] = max(
                        position.offsets.get(record.topic, 0), record.offset + 1
                    )
        self.stats.batches += 1
        await self._publish(outputs)
        changelog = await self._publish_changelog(pending, linked, markers)
        with gc_paused():
            for partition, changes in pending.items():
                self._write(partition, changes, changelog, linked, markers)
        return {
            TopicPartition(topic, partition): offset
            for partition in pending
            for topic, offset in self._positions[partition].offsets.items()
        }

    def _write(
        self,
        partition: int,
        changes: dict[str, Change],
        changelog: dict[int, int],
        linked: dict[int, dict[str, CorrelationChange]],
        markers: dict[int, dict[str, MarkerChange]],
    ) -> None:
        """Step 5: the partition's records, derived data and position in one WriteBatch."""
        position = self._positions[partition]
        position.changelog_next = changelog.get(partition, position.changelog_next)
        self._stores[partition].write(
            changes, position, linked.get(partition), markers.get(partition)
        )

    def _fold_partition(
        self,
        partition: int,
        records: list[ConsumerRecord[bytes, bytes]],
        outputs: list[_Output],
        markers: dict[str, MarkerChange] | None = None,
    ) -> dict[str, Change]:
        """Fold one partition's records; returns {messageId: (before batch, after, JSON)}
        and puts the deletion markers' changes into ``markers``.

        The per-input boundary: each input's whole work (size check, decode, key check, read
        of its record, fold, encoding and size check of what it produced) is done by
        :meth:`_fold_one` before anything of it is kept; if it raises, the input becomes a
        dead letter and the batch goes on. Only a store failure (:class:`StoreError`) escapes."""
        store = self._stores[partition]
        batch = _FoldBatch(store)
        for msg in records:
            self.stats.events += 1
            try:
                step = self._fold_one(msg, batch)
            except StoreError:
                raise
            except Exception as exc:  # one input's failure: park it, keep going
                outputs.append(self._refused(msg, exc))
                continue
            batch.keep(step)
            outputs.extend(step.outputs)
            stats = self.stats
            stats.applied += step.new is not step.record
            stats.status_changes += step.status_changes
            stats.poll_requests += step.poll_requests
            stats.deletions += step.deletions
        result: dict[str, Change] = {}
        for message_id in batch.changed:
            new = batch.current[message_id]
            if new is None:
                raw = None
            else:
                last = batch.encoded.get(message_id)
                raw = last[1] if last is not None and last[0] is new else encode_record(new)
            result[message_id] = (batch.before[message_id], new, raw)
        if markers is not None:
            for message_id, mark in batch.marks.items():
                if mark is not batch.marks_before[message_id]:
                    markers[message_id] = (
                        batch.marks_before[message_id],
                        mark,
                        batch.marks_json.get(message_id),
                    )
        return result

    def _fold_one(self, msg: ConsumerRecord[bytes, bytes], batch: _FoldBatch) -> _FoldStep:
        """Everything one input does, computed without changing ``batch``: raises if the
        input cannot be processed (the caller dead-letters it)."""
        check_size(msg.value, self.settings.max_input_bytes, "too-large", "the value")
        event = self._decoders[msg.topic](msg.value)
        message_id = event.message_id
        if msg.key is None or msg.key != message_id.encode() or message_id.startswith("\x00"):
            raise Refused(
                "wrong-key", f"the Kafka key must be the messageId {message_id!r}, got {msg.key!r}"
            )
        record = batch.record(message_id)
        marker = batch.marker(message_id) if record is None else None
        new, new_marker, emitted = fold_marked(
            record, marker, event, self.policy, source=lambda: _source_ref(msg)
        )
        step = _FoldStep(message_id, record, new, marker, new_marker)
        limit = self.record_limit
        outputs = step.outputs
        for out in emitted:
            if isinstance(out, StatusChanged):
                # The record's JSON is embedded in the status change, and is the changelog
                # value too if nothing changes the record again in this batch.
                record_json = encode_record(out.record)
                check_size(record_json, limit, "record-too-large", "the record")
                step.encoded = (out.record, record_json)
                outputs.append(
                    _Output(
                        self.topics.status_changes,
                        msg.key,
                        encode_status_changed(out, record_json),
                        msg.partition,
                    )
                )
                step.status_changes += 1
                self.metrics.status_changes[out.record.status] += 1
            elif isinstance(out, PollRequested):
                outputs.append(
                    _Output(self.topics.poll_requests, msg.key, encode(out), msg.partition)
                )
                step.poll_requests += 1
            elif isinstance(out, FailoverRequested):
                outputs.append(_Output(self.topics.failover_requests, msg.key, encode(out)))
            elif isinstance(out, RecordFailoverOutcome) and self.reroute_commands:
                # Re-keyed to the original message, which may live on another partition.
                original = out.message_id.encode()
                outputs.append(_Output(self.topics.commands, original, encode(out)))
            elif isinstance(out, ProviderIdLinked):
                key = provider_key(out.provider_id, out.provider_message_id).encode()
                outputs.append(_Output(self.topics.provider_ids, key, encode(out)))
            elif isinstance(out, RecordDeleted):
                deletions = self.topics.record_deletions
                outputs.append(_Output(deletions, msg.key, encode(out), msg.partition))
                step.deletions += 1
            elif isinstance(out, DeadLetter):  # a held command that expired unmatched
                outputs.append(self._letter_of(out))
            elif isinstance(out, EventRejected):
                outputs.append(self._dead_letter(msg, out.reason, out.detail))
        if new is not None and new is not record:
            if step.encoded is None or step.encoded[0] is not new:
                record_json = encode_record(new)
                check_size(record_json, limit, "record-too-large", "the record")
                step.encoded = (new, record_json)
        if new_marker is not None and new_marker is not marker:
            step.marker_json = encode(new_marker)
            check_size(step.marker_json, limit, "state-too-large", "the held state")
        return step

    def _correlate_partition(
        self,
        partition: int,
        records: list[ConsumerRecord[bytes, bytes]],
        outputs: list[_Output],
    ) -> dict[str, CorrelationChange]:
        """Correlate one partition's reports and links; returns {providerKey: change}. Each
        input goes through the per-input boundary, as in :meth:`_fold_partition`."""
        store = self._stores[partition]
        before: dict[str, CorrelationState | None] = {}
        current: dict[str, CorrelationState | None] = {}
        encoded: dict[str, bytes | None] = {}
        for msg in records:
            self.stats.events += 1
            try:
                key, state, new, raw, emitted = self._correlate_one(msg, store, current)
            except StoreError:
                raise
            except Exception as exc:  # one input's failure: park it, keep going
                outputs.append(self._refused(msg, exc))
                continue
            before.setdefault(key, state)
            current[key] = new
            if new is not state:
                encoded[key] = raw
            outputs.extend(emitted)
        return {
            key: (before[key], current[key], raw)
            for key, raw in encoded.items()
            if current[key] is not before[key]
        }

    def _correlate_one(
        self,
        msg: ConsumerRecord[bytes, bytes],
        store: PartitionStore,
        current: dict[str, CorrelationState | None],
    ) -> tuple[str, CorrelationState | None, CorrelationState | None, bytes | None, list[_Output]]:
        """(provider key, state before, state after, its JSON, outputs) of one input; raises if
        the input cannot be processed (the caller dead-letters it)."""
        check_size(msg.value, self.settings.max_input_bytes, "too-large", "the value")
        event = self._correlation_decoders[msg.topic](msg.value)
        key = provider_key(event.provider_id, event.provider_message_id)
        if msg.key is None or msg.key != key.encode():
            raise Refused(
                "wrong-key",
                f"the Kafka key must be providerId:providerMessageId {key!r}, got {msg.key!r}",
            )
        if key in current:
            state = current[key]
        else:
            raw_state = store.get_correlation_raw(key)
            state = None if raw_state is None else _read_state(decode_correlation_state, raw_state)
        event, source = _protected(msg, event, self.settings)
        new, emitted = correlate(state, event, source=source, hold_ms=self.settings.webhook_hold_ms)
        raw = None
        if new is not state and new is not None:
            raw = encode(new)
            check_size(raw, self.record_limit, "state-too-large", "the held state")
        outputs: list[_Output] = []
        for out in emitted:
            if isinstance(out, ReportCorrelated):
                outputs.append(
                    _Output(self.topics.correlated_reports, out.message_id.encode(), encode(out))
                )
            elif isinstance(out, DeadLetter):
                outputs.append(self._letter_of(out, key.encode()))
            else:
                outputs.append(self._dead_letter(msg, out.reason, out.detail))
        if isinstance(event, HoldExpiryDue):
            self.stats.hold_expiries += 1
        elif not isinstance(event, ProviderIdLinked):
            self.stats.reports += 1
        self.stats.reports_correlated += sum(isinstance(o, ReportCorrelated) for o in emitted)
        return key, state, new, raw, outputs

    def _refused(self, msg: ConsumerRecord[bytes, bytes], exc: Exception) -> _Output:
        reason, detail = refusal(exc)
        self.metrics.input_refused(msg.topic, reason)
        if reason == "processing-error" and self.settings.pii.protects_plain:
            # The traceback (in detail) with phone numbers masked, not the exception as is.
            log.error(
                "processing failed on %s@%s:%s: %s",
                msg.topic,
                msg.partition,
                msg.offset,
                mask_phone_text(detail),
            )
        elif reason == "processing-error":
            log.error(
                "processing failed on %s@%s:%s", msg.topic, msg.partition, msg.offset, exc_info=exc
            )
        return self._dead_letter(msg, reason, detail)

    def _dead_letter(self, msg: ConsumerRecord[bytes, bytes], reason: str, detail: str) -> _Output:
        source = Source(msg.topic, msg.partition, msg.offset, msg.key, msg.value)
        return self._letter(source, reason, detail)

    def _letter(self, source: Source, reason: str, detail: str) -> _Output:
        self.stats.dead_letters += 1
        self.metrics.dead_letter(source.topic, reason)
        # Personal data protected: the letter keeps a masked copy, not the input's bytes.
        masked = self.settings.pii.protects_plain
        log.warning(
            "dead letter %s@%s:%s: %s: %s",
            source.topic,
            source.partition,
            source.offset,
            reason,
            mask_phone_text(detail)[:500] if masked else detail[:500],
        )
        key, value = dead_letter(
            source,
            reason,
            detail,
            datetime.now(UTC),
            self.settings.dead_letter_value_bytes,
            mask_phones=masked,
        )
        return _Output(self.topics.dead_letters, key, value)

    def _letter_of(self, letter: DeadLetter, key: bytes | None = None) -> _Output:
        """A dead letter the pure core built for a held input (its source kept in the state),
        bounded like every other."""
        value = None if letter.value_base64 is None else base64.b64decode(letter.value_base64)
        if key is None and letter.key_base64 is not None:
            key = base64.b64decode(letter.key_base64)
        source = Source(letter.topic, letter.partition, letter.offset, key, value)
        return self._letter(source, letter.reason, letter.error)

    # --- publishing -------------------------------------------------------------------------

    async def _partitions(self, topic: str) -> list[int]:
        if topic not in self._partitions_of:
            self._partitions_of[topic] = sorted(await self.producer.partitions_for(topic))
        return self._partitions_of[topic]

    async def _publish(self, outputs: list[_Output]) -> None:
        """Send keyed outputs in per-partition batches and wait for every ack."""
        if not outputs:
            return
        grouped: dict[tuple[str, int], list[_Output]] = defaultdict(list)
        inputs = len(await self._partitions(self.topics.send_results))
        for topic in {out.topic for out in outputs}:
            await self._partitions(topic)
        partitions_of = self._partitions_of
        for out in outputs:
            partitions = partitions_of[out.topic]
            if out.key is None:
                partition = partitions[0]
            elif out.partition is not None and len(partitions) == inputs:
                partition = out.partition
            else:
                partition = self._partitioner(out.key, partitions, partitions)
            grouped[(out.topic, partition)].append(out)
        futures = []
        for (topic, partition), items in grouped.items():
            futures.extend(
                await self._send_batches(
                    topic, partition, ((item.key, item.value) for item in items)
                )
            )
        await asyncio.gather(*futures)
        self.recent.note(outputs)

    async def _send_batches(
        self, topic: str, partition: int, items: Iterable[tuple[bytes | None, bytes | None]]
    ) -> list[asyncio.Future[Any]]:
        producer = self.producer
        futures: list[asyncio.Future[Any]] = []
        batch = producer.create_batch()
        count = 0
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
                count = 0
            count += 1
        if count:
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    async def _publish_changelog(
        self,
        pending: dict[int, dict[str, Change]],
        linked: dict[int, dict[str, CorrelationChange]] | None = None,
        markers: Mapping[int, dict[str, MarkerChange]] | None = None,
    ) -> dict[int, int]:
        """Latest value per changed key, then the position record; returns next offsets."""
        topic = self.topics.records_changelog
        futures: list[asyncio.Future[Any]] = []
        position_futures: dict[int, asyncio.Future[Any]] = {}
        for partition, changes in pending.items():
            self.stats.changelog_writes += len(changes)
            items = ((mid.encode(), raw) for mid, (_, _, raw) in changes.items())
            futures.extend(await self._send_batches(topic, partition, items))
            states = (linked or {}).get(partition)
            if states:
                self.stats.changelog_writes += len(states)
                items = (
                    (CORRELATION_PREFIX + k.encode(), raw) for k, (_, _, raw) in states.items()
                )
                futures.extend(await self._send_batches(topic, partition, items))
            marks = (markers or {}).get(partition)
            if marks:
                self.stats.changelog_writes += len(marks)
                items = ((MARKER_PREFIX + k.encode(), raw) for k, (_, _, raw) in marks.items())
                futures.extend(await self._send_batches(topic, partition, items))
            # Sent after the records: same partition, idempotent producer, so it lands last.
            position = orjson.dumps({"offsets": self._positions[partition].offsets})
            position_futures[partition] = await self.producer.send(
                topic, value=position, key=POSITION_KEY, partition=partition
            )
        await asyncio.gather(*futures)
        return {
            partition: (await future).offset + 1 for partition, future in position_futures.items()
        }

    # --- rebalancing ------------------------------------------------------------------------

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Not answering queries for partitions that may be moving: callers retry or get 503.
        self.ready_partitions -= {tp.partition for tp in revoked}
        log.info("fold: revoked %s", sorted(tp.partition for tp in revoked))

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Open and restore the stores of the assigned partitions, then seek to what they
        reflect. A partition joins ``_stores`` (is folded) and ``ready_partitions`` (is
        answered for) only once its restore has finished: a restore that fails (the broker,
        RocksDB) fails the engine, and the worker restarts, rather than folding a partition
        against a store that is not caught up."""
        partitions = {tp.partition for tp in assigned}
        try:
            async with self._lock:
                self.ready_partitions &= partitions
                # Buffered records are re-fetched from the stored offsets below.
                self._buffer.clear()
                self._last_ts.clear()
                for partition in sorted(set(self._stores) - partitions):
                    self._stores.pop(partition).close()
                    self._positions.pop(partition, None)
                # The record cache is per worker: split over the partitions it owns now.
                total = self.settings.record_cache_size
                share = max(1, total // len(partitions)) if total and partitions else 0
                for store in self._stores.values():
                    store.cache_size = share
                for partition in sorted(partitions - set(self._stores)):
                    store = PartitionStore(
                        self._state_dir / f"partition-{partition}.db",
                        cache_size=share,
                        memory=self.rocks_memory,
                    )
                    try:
                        self._positions[partition] = await self._catch_up(partition, store)
                    except BaseException:
                        store.close()
                        raise
                    self._stores[partition] = store
                for tp in assigned:
                    offset = self._positions[tp.partition].offsets.get(tp.topic)
                    if offset is None:
                        offset = await self.consumer.committed(tp)
                    if offset is not None:
                        self.consumer.seek(tp, offset)
                    else:
                        await self.consumer.seek_to_beginning(tp)
                self.ready_partitions = set(partitions)
        except Exception as exc:
            # aiokafka logs and swallows a listener's error; the loop raises it instead.
            log.error("fold: restoring partitions %s failed: %r", sorted(partitions), exc)
            self._restore_error = exc
            raise
        log.info("fold: assigned partitions %s", sorted(partitions))
        self.ready.set()

    async def _catch_up(self, partition: int, store: PartitionStore) -> Position:
        """Apply changelog records newer than the local store (all of them when it is new);
        returns the position the store then reflects.

        Restore goes through the per-input boundary too: a changelog value that does not
        decode (written by an older version, or by something else) is dead-lettered with its
        bytes and passed over; the key keeps what the store had."""
        position = store.position() or Position()
        tp = TopicPartition(self.topics.records_changelog, partition)
        restorer = AIOKafkaConsumer(
            **kafka_client_kwargs(self.settings),
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
            started = time.monotonic()
            restored = 0
            restorer.seek(tp, position.changelog_next)
            while (await restorer.position(tp)) < end:
                fetched = await restorer.getmany(tp, timeout_ms=1000, max_records=50_000)
                changes: dict[str, Change] = {}
                states: dict[str, CorrelationChange] = {}
                marks: dict[str, MarkerChange] = {}
                letters: list[_Output] = []
                for msg in fetched.get(tp, []):
                    position.changelog_next = msg.offset + 1
                    try:
                        restored += self._restore_one(msg, store, position, changes, states, marks)
                    except StoreError:
                        raise
                    except Exception as exc:  # this value's problem, not the partition's
                        letters.append(self._refused(msg, exc))
                await self._publish(letters)
                store.write(changes, position, states, marks)
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

    @staticmethod
    def _restore_one(
        msg: ConsumerRecord[bytes, bytes],
        store: PartitionStore,
        position: Position,
        changes: dict[str, Change],
        states: dict[str, CorrelationChange],
        marks: dict[str, MarkerChange],
    ) -> int:
        """Stage one changelog value; returns 1 if it is state, 0 for a position record."""
        key, value = msg.key, msg.value
        if key == POSITION_KEY:
            if value is not None:
                offsets = orjson.loads(value)["offsets"]
                if not isinstance(offsets, dict) or not all(
                    isinstance(t, str) and type(o) is int for t, o in offsets.items()
                ):
                    raise Refused(
                        "changelog-invalid", "a position record must map topics to offsets"
                    )
                position.offsets.update(offsets)
            return 0
        if key is None:
            return 0
        if key.startswith(CORRELATION_PREFIX):
            name = key[len(CORRELATION_PREFIX) :].decode()
            state = None if value is None else _read_state(decode_correlation_state, value)
            old_state = states[name][0] if name in states else store.get_correlation(name)
            states[name] = (old_state, state, value)
        elif key.startswith(MARKER_PREFIX):
            mid = key[len(MARKER_PREFIX) :].decode()
            mark = None if value is None else _read_state(decode_marker, value)
            old_mark = marks[mid][0] if mid in marks else store.get_marker(mid)
            marks[mid] = (old_mark, mark, value)
        else:
            mid = key.decode()
            new = None if value is None else _read_state(decode_record, value)
            old = changes[mid][0] if mid in changes else store.get(mid)
            changes[mid] = (old, new, value)
        return 1
