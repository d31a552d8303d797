"""Prometheus metrics of one worker (``GET /metrics`` on the API listener).

Each :class:`Metrics` has its own registry (never the library's global one), so several apps in
one process (tests) do not collide. Two kinds of metric:

- counted where it happens, at most once per fold *batch* on the fold's path (inputs by topic,
  batch size and duration; the ordering watermarks, once per fetch), once per rare event
  elsewhere (refusals, dead letters, provider calls, webhook requests);
- read at scrape time from state the worker keeps anyway (:class:`WorkerCollector`): consumer
  lag, assigned partitions, records by status and due now (aggregate rows and the due index,
  not a scan of records), status changes, outbound webhook attempts, RocksDB size (cached),
  the ordering watermark's delay behind the clock.

Labels are bounded: topics, partitions, configured providers, statuses, outcomes and refusal
reasons; never a messageId, a phone number or a provider id taken from a request as is.
"""

from __future__ import annotations

import math
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web as aiohttp_web
from faust.web import Request, Response, View
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from deliverytrack.tables.aggregates import TOTAL

if TYPE_CHECKING:
    from aiokafka.structs import TopicPartition

    from deliverytrack.streams.engine.loop import FoldEngine
    from deliverytrack.streams.webhooks.dispatcher import WebhookDispatcher

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000)
BATCH_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
CALL_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# The due gauge reads the due index up to this many entries (a range read, bounded).
DUE_LIMIT = 10_000
# RocksDB directory sizes are walked at most this often.
SIZE_CACHE_S = 30.0
UNKNOWN = "unknown"


class Metrics:
    """The counters a worker updates as it goes; the rest is read at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.inputs = Counter(
            "deliverytrack_fold_inputs",
            "Inputs the fold took from each input topic (refused ones included).",
            ["topic"],
            registry=registry,
        )
        self.refused = Counter(
            "deliverytrack_fold_inputs_refused",
            "Inputs the fold could not process (undecodable, wrong key, too large, ...), by "
            "topic and reason; each becomes a dead letter.",
            ["topic", "reason"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "deliverytrack_dead_letters",
            "Dead letters the fold wrote (refused inputs, business rejections, held inputs "
            "that expired), by source topic and reason.",
            ["topic", "reason"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "deliverytrack_fold_batch_inputs",
            "Inputs per fold batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "deliverytrack_fold_batch_duration_seconds",
            "Time to fold, publish and write one batch.",
            buckets=BATCH_SECONDS_BUCKETS,
            registry=registry,
        )
        self.provider_calls = Counter(
            "deliverytrack_provider_calls",
            "Status lookups sent to a provider, by provider and outcome (result, not_yet, error).",
            ["provider", "outcome"],
            registry=registry,
        )
        self.provider_seconds = Histogram(
            "deliverytrack_provider_call_duration_seconds",
            "Provider status lookup latency.",
            ["provider"],
            buckets=CALL_SECONDS_BUCKETS,
            registry=registry,
        )
        self.webhook_requests = Counter(
            "deliverytrack_webhook_requests",
            "Provider webhook requests on the webhook listener, by provider (unknown for an "
            "unconfigured one) and outcome.",
            ["provider", "outcome"],
            registry=registry,
        )
        # Status changes by status: the fold adds to this plain tally (a dict increment per
        # change, no metric call on the hot path); exposed by WorkerCollector.
        self.status_changes: Tally[Any] = Tally()
        # Per fold partition, as of the fold's last release (OrderingBuffer.release): its ordering
        # watermark (ms since the epoch; -inf before every input topic was fetched, +inf when
        # every one is paused) and the inputs buffered behind it. Replaced whole each time.
        self.ordering: dict[int, tuple[float, int]] = {}

    # --- updates ----------------------------------------------------------------------------

    def batch_folded(self, batch: Mapping[TopicPartition, list[Any]], started: float) -> None:
        """One fold batch done: inputs by topic, size and duration (``started``: its
        ``time.perf_counter()``)."""
        by_topic: Tally[str] = Tally()
        for tp, records in batch.items():
            by_topic[tp.topic] += len(records)
        for topic, count in by_topic.items():
            self.inputs.labels(topic).inc(count)
        self.batch_size.observe(sum(by_topic.values()))
        self.batch_seconds.observe(time.perf_counter() - started)

    def ordering_released(self, ordering: dict[int, tuple[float, int]]) -> None:
        """The fold released what its watermarks allow: ``{partition: (watermark_ms, still
        buffered)}``, once per fetch (the delay behind the clock is computed at scrape time)."""
        self.ordering = ordering

    def input_refused(self, topic: str, reason: str) -> None:
        self.refused.labels(topic, reason).inc()

    def dead_letter(self, topic: str, reason: str) -> None:
        self.dead_letters.labels(topic, reason).inc()

    def provider_call(self, provider: str, outcome: str, seconds: float) -> None:
        self.provider_calls.labels(provider, outcome).inc()
        self.provider_seconds.labels(provider).observe(seconds)

    def webhook_request(self, provider: str, status: int) -> None:
        self.webhook_requests.labels(provider, webhook_outcome(status)).inc()

    # --- scrape -----------------------------------------------------------------------------

    def watch(
        self,
        engine: FoldEngine,
        dispatcher: WebhookDispatcher | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Read the worker's state at scrape time (once per registry)."""
        self.registry.register(WorkerCollector(self, engine, dispatcher, clock))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def watermark_delay_s(watermark_ms: float, now: datetime) -> float | None:
    """Seconds the ordering watermark is behind ``now``: None while it is unknown (an input
    topic not fetched yet) or does not hold anything back (every input topic paused); never
    below 0 (a broker clock ahead of ours)."""
    if not math.isfinite(watermark_ms):
        return None
    return max(0.0, (now.timestamp() * 1000 - watermark_ms) / 1000)


def webhook_outcome(status: int) -> str:
    if status == 200:
        return "accepted"
    if status == 404:
        return "unknown_provider"
    if status in (401, 403):
        return "unauthorized"
    if status == 503:
        return "unavailable"
    return "rejected"


class DirectorySizes:
    """Bytes under each directory, walked at most every ``max_age_s`` seconds."""

    def __init__(self, max_age_s: float = SIZE_CACHE_S) -> None:
        self.max_age_s = max_age_s
        self._cache: dict[Path, tuple[float, int]] = {}

    def size(self, path: Path) -> int:
        now = time.monotonic()
        cached = self._cache.get(path)
        if cached is not None and now - cached[0] < self.max_age_s:
            return cached[1]
        total = 0
        try:
            for child in path.rglob("*"):
                try:
                    if child.is_file():
                        total += child.stat().st_size
                except OSError:
                    continue  # a file RocksDB removed while we walked
        except OSError:
            total = 0
        self._cache[path] = (now, total)
        return total


class WorkerCollector(Collector):
    """Metrics computed from the worker's state when Prometheus scrapes."""

    def __init__(
        self,
        metrics: Metrics,
        engine: FoldEngine,
        dispatcher: WebhookDispatcher | None,
        clock: Callable[[], datetime] | None,
    ) -> None:
        self.metrics = metrics
        self.engine = engine
        self.dispatcher = dispatcher
        self.clock = clock or (lambda: datetime.now(UTC))
        self.sizes = DirectorySizes()

    def describe(self) -> Iterable[Any]:
        return []  # computed at scrape time: not collected on registration

    def collect(self) -> Iterator[Any]:
        yield from self._partitions()
        yield from self._lag()
        yield from self._ordering()
        yield from self._records()
        yield self._status_changes()
        if self.dispatcher is not None:
            yield self._outbound(self.dispatcher)

    def _partitions(self) -> Iterator[Any]:
        engine = self.engine
        partitions = engine.assigned_partitions
        yield GaugeMetricFamily(
            "deliverytrack_assigned_partitions",
            "Partitions of the fold inputs assigned to this worker.",
            value=len(partitions),
        )
        size = GaugeMetricFamily(
            "deliverytrack_rocksdb_size_bytes",
            f"Bytes of each partition's RocksDB directory (walked at most every "
            f"{SIZE_CACHE_S:g}s).",
            labels=["partition"],
        )
        for partition in partitions:
            store = engine.store(partition)
            if store is not None:
                size.add_metric([str(partition)], self.sizes.size(store.path))
        yield size

    def _lag(self) -> Iterator[Any]:
        lag = GaugeMetricFamily(
            "deliverytrack_consumer_lag",
            "Records of an input topic-partition not yet folded: its end offset (last "
            "stable offset, else high watermark, as of the last fetch) minus the next offset "
            "to fold.",
            labels=["topic", "partition"],
        )
        engine = self.engine
        try:
            consumer = engine.consumer
        except RuntimeError:  # not started
            yield lag
            return
        applied = engine.applied_offsets()
        for tp in sorted(consumer.assignment(), key=lambda tp: (tp.topic, tp.partition)):
            end = consumer.last_stable_offset(tp)
            if end is None:
                end = consumer.highwater(tp)
            if end is None:
                continue  # not fetched yet: unknown
            lag.add_metric([tp.topic, str(tp.partition)], max(0, end - applied.get(tp, 0)))
        yield lag

    def _ordering(self) -> Iterator[Any]:
        delay = GaugeMetricFamily(
            "deliverytrack_ordering_watermark_delay_seconds",
            "How far a fold partition's ordering watermark is behind now: the oldest point "
            "every input topic of the partition is known up to (the last record fetched from a "
            "topic with more, else that topic's last fetch less the ordering margin); inputs "
            "newer than it wait. Absent until every input topic was fetched.",
            labels=["partition"],
        )
        buffered = GaugeMetricFamily(
            "deliverytrack_ordering_buffered_inputs",
            "Inputs fetched but waiting for their partition's ordering watermark, as of the "
            "fold's last release.",
            labels=["partition"],
        )
        assigned = set(self.engine.assigned_partitions)
        now = self.clock()
        for partition, (watermark, held) in sorted(self.metrics.ordering.items()):
            if partition not in assigned:
                continue  # revoked since the last release
            seconds = watermark_delay_s(watermark, now)
            if seconds is not None:
                delay.add_metric([str(partition)], seconds)
            buffered.add_metric([str(partition)], held)
        yield delay
        yield buffered

    def _records(self) -> Iterator[Any]:
        engine = self.engine
        by_status: Tally[str] = Tally()
        due = 0
        now = self.clock()
        for partition in engine.assigned_partitions:
            store = engine.store(partition)
            if store is None or store.closed:
                continue
            for dims, counter in store.counters(TOTAL):
                by_status[dims[-1]] += counter.count
            due += len(store.due(now, DUE_LIMIT - due)) if due < DUE_LIMIT else 0
        tracked = GaugeMetricFamily(
            "deliverytrack_records",
            "Tracking records on this worker's partitions, by status (from the aggregate "
            "counters).",
            labels=["status"],
        )
        for status, count in sorted(by_status.items()):
            tracked.add_metric([status], count)
        yield tracked
        yield GaugeMetricFamily(
            "deliverytrack_records_due",
            f"Records due for a status check now (from the due index, read up to "
            f"{DUE_LIMIT:,} entries).",
            value=due,
        )

    def _status_changes(self) -> Any:
        family = CounterMetricFamily(
            "deliverytrack_status_changes",
            "Status changes the fold published, by new status.",
            labels=["status"],
        )
        for status, count in sorted(
            (getattr(s, "value", str(s)), n) for s, n in list(self.metrics.status_changes.items())
        ):
            family.add_metric([status], count)
        return family

    def _outbound(self, dispatcher: WebhookDispatcher) -> Any:
        family = CounterMetricFamily(
            "deliverytrack_outbound_webhook_attempts",
            "Outbound webhook delivery attempts, by outcome (exhausted: the last attempt "
            "failed and the delivery went to dead letters).",
            labels=["outcome"],
        )
        family.add_metric(["delivered"], dispatcher.delivered)
        family.add_metric(["failed"], dispatcher.failed_attempts)
        family.add_metric(["exhausted"], dispatcher.exhausted)
        family.add_metric(["refused"], dispatcher.refused)
        return family


def register_metrics(app: Any) -> Metrics:
    """``GET /metrics`` on the API listener (behind its token like every route but /health),
    and the provider calls counted by the app's poller. Returns the app's metrics."""
    metrics: Metrics = app.engine.metrics
    metrics.watch(app.engine, app.dispatcher)
    app.poller.metrics = metrics

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            # Set as a header: aiohttp refuses a charset in ``content_type``.
            body = metrics.exposition()
            response = aiohttp_web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
            return cast(Response, response)  # faust's Response is aiohttp's

    return metrics
