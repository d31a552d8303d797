"""streams/metrics.py without a broker: per-app registries, batch counts, bounded labels, the
scrape-time collector over a fake engine, the ordering watermarks the fold's release records."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiokafka.structs import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from deliverytrack.models.enums import TrackingStatus
from deliverytrack.models.settings import Settings
from deliverytrack.streams.engine.loop import FoldEngine
from deliverytrack.streams.metrics import (
    DirectorySizes,
    Metrics,
    watermark_delay_s,
    webhook_outcome,
)


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_two_apps_in_one_process_keep_their_own_counts() -> None:
    one, two = Metrics(), Metrics()
    one.dead_letter("t.send-results", "wrong-key")
    assert (
        samples(one)[
            (
                "deliverytrack_dead_letters_total",
                (("reason", "wrong-key"), ("topic", "t.send-results")),
            )
        ]
        == 1
    )
    assert not any(name == "deliverytrack_dead_letters_total" for name, _ in samples(two))


def test_a_batch_is_counted_by_topic_once() -> None:
    metrics = Metrics()
    batch = {
        TopicPartition("a", 0): [object()] * 3,
        TopicPartition("a", 1): [object()] * 2,
        TopicPartition("b", 0): [object()],
    }
    metrics.batch_folded(batch, time.perf_counter())
    found = samples(metrics)
    assert found[("deliverytrack_fold_inputs_total", (("topic", "a"),))] == 5
    assert found[("deliverytrack_fold_inputs_total", (("topic", "b"),))] == 1
    assert found[("deliverytrack_fold_batch_inputs_sum", ())] == 6
    assert found[("deliverytrack_fold_batch_inputs_count", ())] == 1
    assert found[("deliverytrack_fold_batch_duration_seconds_count", ())] == 1


def test_provider_calls_and_webhook_outcomes() -> None:
    metrics = Metrics()
    metrics.provider_call("sim", "result", 0.02)
    metrics.provider_call("sim", "error", 3.0)
    for status in (200, 401, 404, 400, 503):
        metrics.webhook_request("gen", status)
    found = samples(metrics)
    labels = (("outcome", "result"), ("provider", "sim"))
    assert found[("deliverytrack_provider_calls_total", labels)] == 1
    count = ("deliverytrack_provider_call_duration_seconds_count", (("provider", "sim"),))
    assert found[count] == 2
    assert [webhook_outcome(s) for s in (200, 401, 403, 404, 400, 413, 503)] == [
        "accepted",
        "unauthorized",
        "unauthorized",
        "unknown_provider",
        "rejected",
        "rejected",
        "unavailable",
    ]


def test_directory_sizes_are_cached(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 100)
    sizes = DirectorySizes(max_age_s=60)
    assert sizes.size(tmp_path) == 100
    (tmp_path / "b").write_bytes(b"x" * 50)
    assert sizes.size(tmp_path) == 100  # cached
    assert DirectorySizes(max_age_s=0).size(tmp_path) == 150
    assert DirectorySizes().size(tmp_path / "missing") == 0


@dataclass
class FakeCounter:
    count: int


@dataclass
class FakeStore:
    path: Path
    rows: list[tuple[tuple[str, ...], FakeCounter]]
    due_now: int
    closed: bool = False

    def counters(self, granularity: bytes) -> list[tuple[tuple[str, ...], FakeCounter]]:
        return self.rows

    def due(self, now: datetime, limit: int) -> list[tuple[int, str]]:
        return [(0, f"m{n}") for n in range(min(self.due_now, limit))]


@dataclass
class FakeConsumer:
    ends: dict[TopicPartition, int]

    def assignment(self) -> set[TopicPartition]:
        return set(self.ends)

    def last_stable_offset(self, tp: TopicPartition) -> int | None:
        return self.ends[tp]

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.ends[tp]


@dataclass
class FakeEngine:
    stores: dict[int, FakeStore]
    consumer: FakeConsumer
    applied: dict[TopicPartition, int]
    metrics: Metrics = field(default_factory=Metrics)

    @property
    def assigned_partitions(self) -> list[int]:
        return sorted(self.stores)

    def store(self, partition: int) -> FakeStore | None:
        return self.stores.get(partition)

    def applied_offsets(self) -> dict[TopicPartition, int]:
        return self.applied


def test_scrape_time_gauges_come_from_the_state(tmp_path: Path) -> None:
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "sst").write_bytes(b"x" * 10)
    engine: Any = FakeEngine(
        stores={
            0: FakeStore(
                tmp_path / "0",
                [(("sim", "SMS", "SENT"), FakeCounter(3)), (("x", "LMS", "SENT"), FakeCounter(2))],
                due_now=4,
            ),
            1: FakeStore(tmp_path / "1", [(("sim", "SMS", "DELIVERED"), FakeCounter(7))], 1),
        },
        consumer=FakeConsumer({TopicPartition("in", 0): 10, TopicPartition("in", 1): 5}),
        applied={TopicPartition("in", 0): 4},
    )
    metrics: Metrics = engine.metrics
    metrics.status_changes[TrackingStatus.DELIVERED] += 2
    metrics.watch(engine, clock=lambda: datetime(2026, 12, 5, tzinfo=UTC))
    found = samples(metrics)
    assert found[("deliverytrack_assigned_partitions", ())] == 2
    assert found[("deliverytrack_records", (("status", "SENT"),))] == 5
    assert found[("deliverytrack_records", (("status", "DELIVERED"),))] == 7
    assert found[("deliverytrack_records_due", ())] == 5
    assert found[("deliverytrack_consumer_lag", (("partition", "0"), ("topic", "in")))] == 6
    assert found[("deliverytrack_consumer_lag", (("partition", "1"), ("topic", "in")))] == 5
    assert found[("deliverytrack_rocksdb_size_bytes", (("partition", "0"),))] == 10
    assert found[("deliverytrack_status_changes_total", (("status", "DELIVERED"),))] == 2


NOW = datetime(2026, 12, 5, tzinfo=UTC)
NOW_MS = NOW.timestamp() * 1000


def test_the_watermark_delay_is_seconds_behind_now_when_known() -> None:
    assert watermark_delay_s(NOW_MS - 2_500, NOW) == 2.5
    assert watermark_delay_s(NOW_MS + 1_000, NOW) == 0.0  # a broker clock ahead of ours
    assert watermark_delay_s(float("-inf"), NOW) is None  # an input topic not fetched yet
    assert watermark_delay_s(float("inf"), NOW) is None  # every input paused: holds nothing


def test_the_ordering_gauges_cover_the_assigned_partitions_only(tmp_path: Path) -> None:
    engine: Any = FakeEngine(
        stores={p: FakeStore(tmp_path, [], 0) for p in (0, 1, 2)},
        consumer=FakeConsumer({}),
        applied={},
    )
    metrics: Metrics = engine.metrics
    metrics.ordering_released(
        {0: (NOW_MS - 300, 4), 1: (float("-inf"), 2), 2: (NOW_MS - 60_000, 0), 7: (NOW_MS, 9)}
    )
    metrics.watch(engine, clock=lambda: NOW)
    found = samples(metrics)
    delay = {
        dict(labels)["partition"]: v
        for (name, labels), v in found.items()
        if name == "deliverytrack_ordering_watermark_delay_seconds"
    }
    buffered = {
        dict(labels)["partition"]: v
        for (name, labels), v in found.items()
        if name == "deliverytrack_ordering_buffered_inputs"
    }
    assert delay == {"0": 0.3, "2": 60.0}  # partition 1: unknown yet; 7: not assigned
    assert buffered == {"0": 4, "1": 2, "2": 0}


@dataclass
class ReadToEndConsumer:
    """Every input topic-partition read to its end at ``polled_ms``, but ``behind``, which has
    more to fetch."""

    polled_ms: int
    behind: TopicPartition

    def paused(self) -> set[TopicPartition]:
        return set()

    def last_stable_offset(self, tp: TopicPartition) -> int:
        return 10

    def highwater(self, tp: TopicPartition) -> int:
        return 10

    async def position(self, tp: TopicPartition) -> int:
        return 5 if tp == self.behind else 10

    def last_poll_timestamp(self, tp: TopicPartition) -> int:
        return self.polled_ms


async def test_the_ordering_buffer_records_each_partitions_watermark_once_per_release(
    tmp_path: Path,
) -> None:
    engine = FoldEngine(Settings(data_dir=tmp_path, ordering_margin_ms=200))
    behind = TopicPartition(engine.topics.send_results, 0)
    consumer = ReadToEndConsumer(polled_ms=10_000, behind=behind)
    # Partition 0: send results fetched up to 9,000 with more to come (the watermark), the
    # other topics read to their end at 10,000 (less the margin: 9,800).
    fetched = [SimpleNamespace(timestamp=t) for t in (8_000, 8_500, 9_000)]
    engine.ordering.add({behind: fetched}, {0, 1})  # type: ignore[dict-item]
    released = await engine.ordering.release(consumer, [0, 1])
    assert [r.timestamp for r in released[behind]] == [8_000, 8_500]
    # Partition 1: every topic read to its end: the last fetch less the margin.
    assert engine.ordering.watermarks == {0: (9_000, 1), 1: (9_800, 0)}
    engine.metrics.ordering_released(engine.ordering.watermarks)  # what the fold loop does
    assert engine.metrics.ordering == {0: (9_000, 1), 1: (9_800, 0)}
