"""Topic set-up against a real broker: what the worker says about topics it did not create."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deliverytrack.streams.kafka.topic_admin import ensure_topics
from deliverytrack.streams.topics import Topics

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
