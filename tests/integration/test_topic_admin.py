"""Topic set-up and restore against a real broker: what the worker says about topics it did not
create, and a store too old to catch up from the changelog."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deliverytrack.models.codec import encode_record
from deliverytrack.streams.engine.changelog import POSITION_KEY, encode_position
from deliverytrack.streams.engine.loop import FoldEngine
from deliverytrack.streams.kafka.topic_admin import ensure_topics, tombstone_retention_ms
from deliverytrack.streams.state.store import PartitionStore, StaleStore
from deliverytrack.streams.topics import Topics
from deliverytrack.tables.fold import fold
from tests.factories import send_recorded_factory

pytestmark = pytest.mark.integration


async def test_an_input_topic_with_producer_timestamps_is_named_in_a_warning(
    settings_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_factory()
    topics = Topics.from_prefix(settings.topic_prefix, settings.app_id)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:  # made by hand, as an operator might: the broker's default, CreateTime
        config = {"message.timestamp.type": "CreateTime"}
        await admin.create_topics([NewTopic(topics.commands, settings.partitions, 1, None, config)])
    finally:
        await admin.close()
    with caplog.at_level(logging.WARNING, logger="deliverytrack.streams.kafka.topic_admin"):
        await ensure_topics(settings, topics, timeout=20)
    (warning,) = [r.getMessage() for r in caplog.records if "CreateTime" in r.getMessage()]
    assert f"['{topics.commands}']" in warning
    assert f"until {4 * settings.fold_batch_max_records} are waiting" in warning

    caplog.clear()  # the topics the worker made itself get broker timestamps: nothing to say
    fresh = settings_factory(topic_prefix=f"fresh.{settings.topic_prefix}")
    with caplog.at_level(logging.WARNING, logger="deliverytrack.streams.kafka.topic_admin"):
        await ensure_topics(fresh, Topics.from_prefix(fresh.topic_prefix, fresh.app_id), 20)
    assert not [r for r in caplog.records if "CreateTime" in r.getMessage()]


async def test_a_store_older_than_the_changelog_tombstones_is_not_caught_up(
    settings_factory: Any, tmp_path: Any
) -> None:
    """Restore refuses to catch a store up once it is older than the changelog keeps its
    tombstones (the partition is then restored afresh: ``OwnedPartitions.assign``)."""
    settings = settings_factory(partitions=1)
    topics = Topics.of(settings)
    await ensure_topics(settings, topics, timeout=20)
    assert await tombstone_retention_ms(settings, topics.records_changelog) == 86_400_000
    record, _ = fold(None, send_recorded_factory("m-1"))
    assert record is not None
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    engine = FoldEngine(settings)
    store = PartitionStore(tmp_path / "p0.db")
    try:
        changelog = topics.records_changelog
        await producer.send_and_wait(changelog, encode_record(record), key=b"m-1", partition=0)
        position = encode_position({topics.send_results: 1})
        await producer.send_and_wait(changelog, position, key=POSITION_KEY, partition=0)
        await engine.changelog.catch_up(0, store)  # a new store: restored
        assert store.get("m-1") is not None and store.written_ms() is not None
        await producer.send_and_wait(changelog, position, key=POSITION_KEY, partition=0)
        engine.changelog.tombstones_ms = 0  # any store is older than that
        with pytest.raises(StaleStore, match="partition 0: its store predates the tombstones"):
            await engine.changelog.catch_up(0, store)
        engine.changelog.tombstones_ms = 86_400_000
        assert (await engine.changelog.catch_up(0, store)).changelog_next == 3
    finally:
        store.close()
        await producer.stop()
