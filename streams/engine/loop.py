"""The fold engine: the only writer of the records table.

Not a stock Faust agent + Table: the fold runs as a batched consumer inside the Faust worker (a
``mode.Service`` the app starts); bench/README.md has the measurements behind that choice.
Each batch:

1. ``getmany`` from the input topics (all keyed by messageId, co-partitioned, assigned with the
   range assignor so partition p of every input lands on the same worker), released in replay
   order by the ordering buffer (``ordering.py``);
2. per partition, decode, correlate and fold each input (``batch.py``; bad input -> a dead
   letter with the original bytes and the reason), reading each record once per batch;
3. publish status changes and dead letters and wait for the broker's acks (``publisher.py``);
4. publish the latest value of each changed key once to the compacted changelog, then a
   position record (the source offsets the changelog reflects), and wait for the acks
   (``changelog.py``);
5. write records, derived indexes and the position to the partition's RocksDB in one WriteBatch;
6. commit the consumer offsets (informational: local RocksDB, then the changelog, are the
   source of truth for where to resume).

A crash between any two steps re-reads the uncommitted events; the fold drops the ones already
applied (their eventIds are on the record) and re-publishes nothing twice that was acked after
the state that implies it. Status changes are acked before the state that implies them, so every
transition is published at least once with a stable eventId.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from deliverytrack.models.policy import FoldPolicy
from deliverytrack.models.records import TrackingRecord
from deliverytrack.models.settings import Settings
from deliverytrack.streams.engine.batch import BatchFold, PartitionResult
from deliverytrack.streams.engine.changelog import Changelog
from deliverytrack.streams.engine.ordering import OrderingBuffer, Records
from deliverytrack.streams.engine.partitions import OwnedPartitions
from deliverytrack.streams.engine.publisher import Publisher
from deliverytrack.streams.engine.recent import RecentOutputs
from deliverytrack.streams.engine.routing import Output, Router
from deliverytrack.streams.engine.stats import (
    GC_PAUSE_LIMIT_S,
    EngineSensor,
    EngineStats,
    NoSensor,
    gc_paused,
)
from deliverytrack.streams.engine.timers import Timers
from deliverytrack.streams.kafka.clients import fold_consumer, fold_producer
from deliverytrack.streams.kafka.membership import Membership, Rebalance, query_url
from deliverytrack.streams.kafka.topic_admin import ensure_topics
from deliverytrack.streams.metrics import Metrics
from deliverytrack.streams.state.memory import HeapTrimmer, RocksMemory, rss_bytes, tune_heap
from deliverytrack.streams.state.store import PartitionStore
from deliverytrack.streams.supervision import TaskFailure
from deliverytrack.streams.topics import Topics

log = logging.getLogger(__name__)


class FoldEngine:
    """Consumes the fold inputs, owns the RocksDB stores of its assigned partitions."""

    def __init__(
        self,
        settings: Settings,
        topics: Topics | None = None,
        *,
        correlate: bool = True,
        reroute_commands: bool = True,
        stop_at: Mapping[TopicPartition, int] | None = None,
        sensor: EngineSensor | None = None,
    ) -> None:
        """``correlate=False`` folds the records only and ``reroute_commands=False`` leaves
        derived commands unpublished (a replay reads the recorded ones); ``stop_at`` folds
        nothing at or past those offsets (a replay bounded by the live table); ``sensor`` is
        told about each batch (a benchmark, a metrics exporter)."""
        self.settings = settings
        self.topics = topics or Topics.of(settings)
        self.policy: FoldPolicy = settings.fold_policy
        self.stats = EngineStats()
        self.sensor = sensor or NoSensor()
        self.metrics = Metrics()  # GET /metrics (streams/metrics.py)
        # The last status changes and dead letters published, for the dashboard (GET /recent).
        self.recent = RecentOutputs(self.topics.status_changes, self.topics.dead_letters)
        # What bounds the worker's memory (streams/state/memory.py): one RocksDB budget for all
        # its stores, and the C heap's freed pages returned after batches.
        self.rocks_memory = RocksMemory(settings.rocksdb_memory_mb)
        self.heap = HeapTrimmer()
        self.group_id = f"{settings.app_id}.fold"
        self.membership = Membership(query_url(settings))
        state_dir = Path(settings.data_dir) / settings.app_id / "records"
        self.partitions = OwnedPartitions(
            state_dir, settings.record_cache_size, memory=self.rocks_memory
        )
        self.router = Router(settings, self.topics, self.stats, self.metrics, reroute_commands)
        self.publisher = Publisher(self.topics, settings.partitions, self.recent)
        self.batch = BatchFold(
            settings, self.topics, self.router, self.stats, correlate=correlate, sensor=self.sensor
        )
        self.changelog = Changelog(settings, self.topics, self.publisher, self.router, self.stats)
        self.timers = Timers(
            self.policy,
            self.topics,
            self.stats,
            lambda: self.partitions.stores.values(),
            self.publisher.publish,
        )
        cap = 4 * settings.fold_batch_max_records
        self.ordering = OrderingBuffer(tuple(self.batch.rank), settings.ordering_margin_ms, cap)
        self.stop_at = stop_at
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.ready = asyncio.Event()
        # The fold loop's error, if it ends on one: the worker must restart (FoldService).
        self.failure = TaskFailure("fold")
        # A partition restore that failed (in the rebalance listener, whose errors aiokafka
        # swallows): the loop raises it, the worker restarts.
        self._restore_error: Exception | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        topic_limit = await ensure_topics(settings, self.topics)
        self.router.limit_records(topic_limit)
        producer = fold_producer(settings, topic_limit)
        self._consumer = fold_consumer(settings, self.group_id, self.membership.assignor())
        self.publisher.producer = producer
        tune_heap()
        self.batch.log_hot_path()
        await producer.start()
        await self.publisher.partitions(self.topics.send_results)
        self._consumer.subscribe(
            topics=list(self.batch.rank),
            listener=Rebalance(self.on_partitions_revoked, self.on_partitions_assigned),
        )
        await self._consumer.start()
        # The fold allocates many short-lived objects per event; the default gen-0 threshold
        # (700) ran the cyclic GC thousands of times per batch of short-lived, acyclic objects.
        gc.freeze()
        gc.set_threshold(max(gc.get_threshold()[0], 50_000), 20, 20)
        self._task = asyncio.create_task(self.run(), name="fold-engine")
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
            self.partitions.close_all()
        if self.publisher.producer is not None:
            await self.publisher.producer.stop()

    @property
    def producer(self) -> AIOKafkaProducer:
        if self.publisher.producer is None:
            raise RuntimeError("the fold engine is not started")
        return self.publisher.producer

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the fold engine is not started")
        return self._consumer

    @property
    def record_limit(self) -> int:
        """The largest record (or state) the fold writes: the setting, or less when the
        topics it writes take less (see start)."""
        return self.router.record_limit

    # --- what the rest of the worker reads ----------------------------------------------------

    @property
    def ready_partitions(self) -> set[int]:
        return self.partitions.ready

    @property
    def assigned_partitions(self) -> list[int]:
        return sorted(self.partitions.stores)

    def store(self, partition: int) -> PartitionStore | None:
        return self.partitions.stores.get(partition)

    def memory(self) -> dict[str, Any]:
        """What this worker holds (/health's ``memory``): RSS, the record cache, RocksDB's
        shared budget and use, and the heap trims so far."""
        stores = list(self.partitions.stores.values())
        return {
            "rssBytes": rss_bytes(),
            "recordCacheRecords": sum(s.cached_records for s in stores),
            "recordCacheLimit": self.settings.record_cache_size,
            "rocksdb": self.rocks_memory.usage(),
            "heapTrims": self.heap.trims,
        }

    def held_commands(self) -> int:
        """Commands waiting for their send result on this worker's partitions."""
        return sum(store.held_commands() for store in list(self.partitions.stores.values()))

    def applied_offsets(self) -> dict[TopicPartition, int]:
        """Next offset to fold per input topic-partition, as far as the written state (the
        partition stores) reflects; a batch in flight is not counted until it is written."""
        offsets: dict[TopicPartition, int] = {}
        for partition, store in list(self.partitions.stores.items()):
            position = store.position()
            if position is not None:
                for topic, offset in position.offsets.items():
                    offsets[TopicPartition(topic, partition)] = offset
        return offsets

    @property
    def partition_count(self) -> int:
        return len(self.publisher.input_partitions())

    def partition_of(self, message_id: str) -> int:
        """The partition a messageId's events (and record) live in."""
        return self.publisher.partition_of(message_id.encode())

    def get_record(self, message_id: str) -> TrackingRecord | None:
        """The record, if its partition is assigned to this worker."""
        store = self.store(self.partition_of(message_id))
        return None if store is None else store.get(message_id)

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """The fold loop (``start`` runs it as a task): fetch, release in order, process,
        commit; raises a partition restore's error."""
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
                stores = self.partitions.stores
                self.ordering.add(fetched, stores)
                fetched.clear()
                batch = await self.ordering.release(self.consumer, stores, self.stop_at)
                self.metrics.ordering_released(self.ordering.watermarks)
                if not batch:
                    continue
                # The collector stays paused for the whole batch and runs after it, when the
                # batch's inputs, events and outputs are already freed (see gc_paused).
                with gc_paused(limit_s=GC_PAUSE_LIMIT_S):
                    started = time.perf_counter()
                    offsets = await self.process(batch)
                    self.metrics.batch_folded(batch, started)
                    del batch
            with self.sensor.phase("commit"):
                await self._commit(offsets)
            self.heap.freed()  # the batch's buffers are freed: their pages go back (above)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Harmless: the local store and the changelog record where to resume.
            log.info("fold: offset commit skipped (%s)", exc)

    async def process(self, batch: Records) -> dict[TopicPartition, int]:
        """Steps 2-5 for one released batch; returns the offsets to commit."""
        sensor = self.sensor
        sensor.batch_started(batch)
        with sensor.phase("process"):
            offsets = await self._process(batch)
        sensor.batch_done(batch)
        return offsets

    async def _process(self, batch: Records) -> dict[TopicPartition, int]:
        stores, positions = self.partitions.stores, self.partitions.positions
        by_partition: dict[int, list[ConsumerRecord[bytes, bytes]]] = defaultdict(list)
        for tp, records in batch.items():
            if tp.partition in stores:  # skip anything fetched before a revoke
                by_partition[tp.partition].extend(records)
        outputs: list[Output] = []
        results: dict[int, PartitionResult] = {}
        with gc_paused():
            for partition, records in by_partition.items():
                store, position = stores[partition], positions[partition]
                results[partition] = self.batch.apply(store, position, records, outputs)
        self.stats.batches += 1
        with self.sensor.phase("publish"):
            await self.publisher.publish(outputs)
        with self.sensor.phase("changelog"):
            changelog = await self.changelog.publish(results, positions)
        with gc_paused(), self.sensor.phase("write"):
            for partition, result in results.items():
                # Step 5: the partition's records, derived data and position in one WriteBatch.
                position = positions[partition]
                position.changelog_next = changelog.get(partition, position.changelog_next)
                stores[partition].write(result.records, position, result.states, result.markers)
        return {
            TopicPartition(topic, partition): offset
            for partition in results
            for topic, offset in positions[partition].offsets.items()
        }

    # --- rebalancing ------------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Stop answering for ``revoked`` (callers retry or get 503); return (the consumer then
        rejoins) only once the batch in flight is written: the next owners restore all of it."""
        self.partitions.ready -= {tp.partition for tp in revoked}
        async with self._lock:
            log.info("fold: revoked %s", sorted(tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Open and restore the stores of the assigned partitions, then seek to what they
        reflect. A partition is folded and answered for only once its restore has finished:
        a restore that fails (the broker, RocksDB) fails the engine, and the worker restarts,
        rather than folding a partition against a store that is not caught up."""
        partitions = {tp.partition for tp in assigned}
        try:
            async with self._lock:
                self.ordering.clear()  # re-fetched from the stored offsets below
                await self.partitions.assign(partitions, self.changelog.catch_up)
                # One seek_to_beginning for all: each call waits for the fetcher's next offset
                # reset (~100 ms), so one per partition took seconds per assignment.
                from_beginning: list[TopicPartition] = []
                for tp in assigned:
                    offset = self.partitions.positions[tp.partition].offsets.get(tp.topic)
                    if offset is None:
                        offset = await self.consumer.committed(tp)
                    if offset is not None:
                        self.consumer.seek(tp, offset)
                    else:
                        from_beginning.append(tp)
                if from_beginning:
                    await self.consumer.seek_to_beginning(*from_beginning)
                self.partitions.ready = set(partitions)
        except Exception as exc:
            # aiokafka logs and swallows a listener's error; the loop raises it instead.
            log.error("fold: restoring partitions %s failed: %r", sorted(partitions), exc)
            self._restore_error = exc
            raise
        log.info("fold: assigned partitions %s", sorted(partitions))
        self.ready.set()
