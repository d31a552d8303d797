"""The session's real Kafka broker accepts topic creation, produce and group consume."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deliverytrack.streams.kafka_broker import BrokerInfo

pytestmark = pytest.mark.integration

N_RECORDS = 100
N_PARTITIONS = 3
STEP_TIMEOUT = 30.0


async def test_produce_and_consume_roundtrip(kafka_broker: BrokerInfo) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    assert kafka_broker.url == f"kafka://{bootstrap.split(',')[0]}"
    topic = f"it-broker-{uuid.uuid4().hex[:12]}"

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20_000)
    async with asyncio.timeout(STEP_TIMEOUT):
        await admin.start()
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            await admin.create_topics(
                [NewTopic(topic, num_partitions=N_PARTITIONS, replication_factor=1)],
                timeout_ms=20_000,
            )
    finally:
        await admin.close()

    sent = {f"value-{i}".encode() for i in range(N_RECORDS)}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=20_000)
    async with asyncio.timeout(STEP_TIMEOUT):
        await producer.start()
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            futures = [
                await producer.send(
                    topic,
                    value=f"value-{i}".encode(),
                    key=str(i).encode(),
                    partition=i % N_PARTITIONS,
                )
                for i in range(N_RECORDS)
            ]
            await producer.flush()
            metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    assert {m.partition for m in metas} == set(range(N_PARTITIONS))

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"it-group-{uuid.uuid4().hex[:12]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    async with asyncio.timeout(STEP_TIMEOUT):
        await consumer.start()
    received: dict[bytes, int] = {}
    try:
        async with asyncio.timeout(60.0):
            while len(received) < N_RECORDS:
                batches = await consumer.getmany(timeout_ms=1_000)
                for tp, records in batches.items():
                    for record in records:
                        assert record.value is not None
                        received[record.value] = tp.partition
        async with asyncio.timeout(STEP_TIMEOUT):
            await consumer.commit()
    finally:
        await consumer.stop()

    assert set(received) == sent
    assert set(received.values()) == set(range(N_PARTITIONS))
