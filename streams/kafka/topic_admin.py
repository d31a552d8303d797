"""Topic creation: inputs and outputs as configured, the changelog compact-only."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from deliverytrack.models.settings import Settings
from deliverytrack.streams.kafka.clients import new_admin
from deliverytrack.streams.topics import Topics

log = logging.getLogger(__name__)

COMPACT_ONLY = {"cleanup.policy": "compact"}
# Inputs of the fold get broker timestamps: the fold merges its topics in timestamp order, and
# replaying them must sort them exactly as the live worker did.
LOG_APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}


async def ensure_topics(settings: Settings, topics: Topics, timeout: float = 30.0) -> int | None:
    """Create missing topics. Existing ones are left as they are, but the internal topics and
    the changelog always get the partition count of send-results (they are co-partitioned).
    Returns the smallest ``max.message.bytes`` of the topics the fold writes (None if the
    broker does not say): existing topics may take less than the worker would write."""
    admin = new_admin(settings, client_id=f"{settings.app_id}-admin")
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await admin.start()
            break
        except KafkaError as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"cannot reach Kafka at {settings.broker}: {exc}") from exc
            await asyncio.sleep(0.5)
    try:
        await _create_missing(admin, settings, {topics.send_results: LOG_APPEND_TIME})
        partitions = settings.partitions
        described = await admin.describe_topics([topics.send_results])
        if described and described[0].get("partitions"):
            partitions = len(described[0]["partitions"])
        co_partitioned = {name: LOG_APPEND_TIME for name in topics.co_partitioned}
        await _create_missing(admin, settings, co_partitioned, partitions)
        others = set(topics.public) - set(co_partitioned) - {topics.send_results}
        await _create_missing(admin, settings, {name: {} for name in sorted(others)})
        internal = {name: LOG_APPEND_TIME for name in topics.internal}
        internal[topics.records_changelog] = COMPACT_ONLY
        await _create_missing(admin, settings, internal, partitions)
        await _check_partitions(admin, topics, partitions)
        folded = (topics.due_checks, topics.observations, topics.provider_ids)
        inputs = [topics.send_results, *co_partitioned, *folded, topics.correlated_reports]
        await _warn_create_time(admin, settings, inputs)
        return await _message_limit(admin, topics)
    finally:
        await admin.close()


async def _create_missing(
    admin: AIOKafkaAdminClient,
    settings: Settings,
    wanted: dict[str, dict[str, str]],
    partitions: int | None = None,
) -> None:
    existing = set(await admin.list_topics())
    # Explicit, so that no output the worker may produce (the largest: a status change with a
    # record of max_record_bytes) is refused by a broker whose default is smaller.
    limit = {"max.message.bytes": str(settings.max_message_bytes)}
    missing = [
        NewTopic(
            name=name,
            num_partitions=partitions or settings.partitions,
            replication_factor=settings.replication_factor,
            topic_configs={**config, **limit},
        )
        for name, config in wanted.items()
        if name not in existing
    ]
    if not missing:
        return
    try:
        await admin.create_topics(missing)
    except TopicAlreadyExistsError:
        pass  # another worker created them at the same time
    log.info("created topics %s", [topic.name for topic in missing])


async def _check_partitions(admin: AIOKafkaAdminClient, topics: Topics, partitions: int) -> None:
    """Refuse to start on topics that are not co-partitioned: the fold would read a record's
    events on different partitions (and workers) and lose their order."""
    names = [*topics.co_partitioned, *topics.internal, topics.records_changelog]
    wrong = []
    for described in await admin.describe_topics(names):
        count = len(described.get("partitions") or [])
        if count and count != partitions:
            wrong.append(f"{described['topic']} has {count}")
    if wrong:
        raise RuntimeError(
            f"topics must have the partition count of {topics.send_results} ({partitions}): "
            + ", ".join(wrong)
            + "; recreate them or repartition through a new topic prefix"
        )


async def _warn_create_time(
    admin: AIOKafkaAdminClient, settings: Settings, inputs: list[str]
) -> list[str]:
    """Warn about fold inputs that keep their producers' timestamps (topics created outside
    the worker with ``CreateTime``): the fold orders its inputs by timestamp, so a record
    stamped in the future holds back the later inputs of its partition. Returns their names."""
    configs = await _topic_configs(admin, inputs, "message.timestamp.type")
    create_time = sorted(name for name, value in configs.items() if value == "CreateTime")
    if create_time:
        log.warning(
            "input topics %s use message.timestamp.type=CreateTime: the fold orders inputs by "
            "their producers' timestamps, and a record stamped in the future holds back the "
            "later inputs of its partition until %d are waiting; set LogAppendTime on them",
            create_time,
            4 * settings.fold_batch_max_records,
        )
    return create_time


KAFKA_DELETE_RETENTION_MS = 86_400_000
"""Kafka's default ``delete.retention.ms``: how long a compacted topic keeps a tombstone."""


async def tombstone_retention_ms(settings: Settings, topic: str) -> int:
    """The topic's ``delete.retention.ms`` (Kafka's default when the broker does not say)."""
    admin = new_admin(settings, client_id=f"{settings.app_id}-admin")
    try:
        await admin.start()
        value = (await _topic_configs(admin, [topic], "delete.retention.ms")).get(topic, "")
    except KafkaError as exc:
        log.info("cannot read %s's delete.retention.ms (%s)", topic, exc)
        value = ""
    finally:
        await admin.close()
    return int(value) if value.isdigit() else KAFKA_DELETE_RETENTION_MS


async def _topic_configs(admin: AIOKafkaAdminClient, names: list[str], key: str) -> dict[str, str]:
    """{topic: value of ``key``} for the topics whose config the broker gives."""
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, {key: ""}) for name in names]
        )
    except KafkaError as exc:
        log.info("cannot read the topics' %s (%s)", key, exc)
        return {}
    return {
        resource[3]: str(entry[1])
        for response in responses
        for resource in getattr(response, "resources", ())
        for entry in resource[4]
        if entry[0] == key
    }


async def _message_limit(admin: AIOKafkaAdminClient, topics: Topics) -> int | None:
    """The smallest ``max.message.bytes`` of the topics the fold engine writes."""
    written = [
        topics.status_changes,
        topics.dead_letters,
        topics.records_changelog,
        topics.correlated_reports,
        topics.poll_requests,
        topics.provider_ids,
        topics.record_deletions,
    ]
    configs = await _topic_configs(admin, written, "max.message.bytes")
    limits = [int(value) for value in configs.values() if value.isdigit()]
    return min(limits) if limits else None
