"""The cross-topic ordering buffer: what the fold may take from a fetch, in the order a replay
of the topics would fold it.

A record's events arrive on several topics; folding each batch in timestamp order is not
enough, because one topic's fetch can run ahead of another's. So a partition's records are
released only up to its watermark: the oldest point up to which every input topic of that
partition is known, i.e. the timestamp of the last record fetched from a topic that has more,
or (for a topic read to its end) the time of that fetch less ``orderingMarginMs``. Topics are
created with LogAppendTime, so timestamps are the broker's and replaying the topics sorts them
the same way. (Quix Streams keeps the same idea in ``internal_consumer/buffering.py``.)
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Protocol

from aiokafka.structs import ConsumerRecord, TopicPartition

log = logging.getLogger(__name__)

Records = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


class FetchState(Protocol):
    """What the buffer asks the consumer (``AIOKafkaConsumer`` is one)."""

    def paused(self) -> Collection[TopicPartition]: ...

    def last_stable_offset(self, tp: TopicPartition) -> int | None: ...

    def highwater(self, tp: TopicPartition) -> int | None: ...

    async def position(self, tp: TopicPartition) -> int: ...

    def last_poll_timestamp(self, tp: TopicPartition) -> int | None: ...


class OrderingBuffer:
    """Fetched records per input topic-partition until their partition's watermark passes."""

    def __init__(self, topics: Sequence[str], margin_ms: int, cap: int) -> None:
        """``topics`` in tie-break order; a partition with more than ``cap`` records waiting
        is released in timestamp order without its watermark (with a warning)."""
        self.topics = tuple(topics)
        self.margin_ms = margin_ms
        self.cap = cap
        self._buffer: Records = defaultdict(list)
        self._last_ts: dict[TopicPartition, int] = {}
        # Per partition, as of the last release: its watermark and the inputs still waiting
        # for it (/metrics: deliverytrack_ordering_watermark_delay_seconds).
        self.watermarks: dict[int, tuple[float, int]] = {}

    def add(self, fetched: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
            owned: Collection[int]) -> None:  # fmt: skip
        """Buffer a fetch; records of partitions not ``owned`` (revoked meanwhile) are dropped."""
        for tp, records in fetched.items():
            if tp.partition in owned and records:
                self._buffer[tp].extend(records)
                self._last_ts[tp] = records[-1].timestamp

    def clear(self) -> None:
        """Forget everything (a rebalance: the records are fetched again from the stored
        offsets)."""
        self._buffer.clear()
        self._last_ts.clear()

    def pending(self, tp: TopicPartition) -> int:
        return len(self._buffer.get(tp, ()))

    async def release(
        self,
        consumer: FetchState,
        partitions: Iterable[int],
        stop_at: Mapping[TopicPartition, int] | None = None,
    ) -> Records:
        """The buffered records that may be folded now. With ``stop_at`` (a replay bounded by
        the live table's offsets), nothing at or past a topic-partition's offset is released:
        it stays buffered."""
        released: Records = {}
        watermarks: dict[int, tuple[float, int]] = {}
        for partition in list(partitions):
            tps = [TopicPartition(topic, partition) for topic in self.topics]
            watermark: float = float("inf")
            for tp in tps:
                watermark = min(watermark, await self.frontier(consumer, tp))
            pending = sum(len(self._buffer.get(tp, ())) for tp in tps)
            frontier = watermark
            if pending > self.cap:
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
                if not cut:
                    continue
                out = buffered[:cut]
                del buffered[:cut]
                if stop_at is not None:
                    limit = stop_at.get(tp, 0)
                    keep = [r for r in out if r.offset < limit]
                    if len(keep) < len(out):
                        buffered[:0] = [r for r in out if r.offset >= limit]
                    out = keep
                if out:
                    released[tp] = out
                    pending -= len(out)
            watermarks[partition] = (frontier, pending)
        self.watermarks = watermarks
        return released

    async def frontier(self, consumer: FetchState, tp: TopicPartition) -> float:
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
            return float("-inf") if polled is None else float(polled - self.margin_ms)
        last = self._last_ts.get(tp)
        return float("-inf") if last is None else float(last)
