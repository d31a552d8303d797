"""The engine's producer side: outputs in per-partition batches, every ack awaited."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer

from deliverytrack.streams.engine.recent import RecentOutputs
from deliverytrack.streams.engine.routing import Output
from deliverytrack.streams.kafka.partitioner import partition_for
from deliverytrack.streams.topics import Topics


class Publisher:
    """Sends outputs and knows the partitions of the topics it writes."""

    def __init__(
        self, topics: Topics, default_partitions: int, recent: RecentOutputs | None = None
    ) -> None:
        """``recent`` is shown every batch once it is acked (the dashboard's ring)."""
        self.topics = topics
        self.default_partitions = default_partitions
        self.recent = recent
        self.producer: AIOKafkaProducer | None = None
        """Set by the engine once its producer is started."""
        self._partitions_of: dict[str, list[int]] = {}

    def _producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            raise RuntimeError("the fold engine is not started")
        return self.producer

    async def partitions(self, topic: str) -> list[int]:
        if topic not in self._partitions_of:
            producer = self._producer()
            self._partitions_of[topic] = sorted(await producer.partitions_for(topic))
        return self._partitions_of[topic]

    def input_partitions(self) -> list[int]:
        """The partitions of the inputs (send-results' once known, else the setting's)."""
        known = self._partitions_of.get(self.topics.send_results)
        return known or list(range(self.default_partitions))

    def partition_of(self, key: bytes) -> int:
        """The input partition of a key (a messageId's events and record live there)."""
        return partition_for(key, self.input_partitions())

    async def publish(self, outputs: list[Output]) -> None:
        """Send keyed outputs in per-partition batches and wait for every ack. An output that
        carries its input's partition lands on that partition number when its topic has the
        inputs' partition count (no murmur2); one without a key goes to the first."""
        if not outputs:
            return
        grouped: dict[tuple[str, int], list[Output]] = defaultdict(list)
        inputs = len(await self.partitions(self.topics.send_results))
        for topic in {out.topic for out in outputs}:
            await self.partitions(topic)
        partitions_of = self._partitions_of
        for out in outputs:
            partitions = partitions_of[out.topic]
            if out.key is None:
                partition = partitions[0]
            elif out.partition is not None and len(partitions) == inputs:
                partition = out.partition
            else:
                partition = partition_for(out.key, partitions)
            grouped[(out.topic, partition)].append(out)
        futures = []
        for (topic, partition), items in grouped.items():
            futures.extend(
                await self.send_batches(
                    topic, partition, ((item.key, item.value) for item in items)
                )
            )
        await asyncio.gather(*futures)
        if self.recent is not None:
            self.recent.note(outputs)

    async def send_batches(
        self, topic: str, partition: int, items: Iterable[tuple[bytes | None, bytes | None]]
    ) -> list[asyncio.Future[Any]]:
        """Queue ``items`` for one partition in as few producer batches as fit; the futures of
        their acks."""
        producer = self._producer()
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

    async def send(self, topic: str, key: bytes, value: bytes, partition: int) -> Any:
        """One record; the future of its ack."""
        return await self._producer().send(topic, value=value, key=key, partition=partition)
