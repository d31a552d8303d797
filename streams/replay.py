"""``deliverytrack replay`` and ``deliverytrack history``: the table is a fold of its topics.

Replay folds the live inputs (send results, commands, observations, due checks, correlated
reports) into fresh state under a new app id and data dir, with outputs on topics of its own, so
it never touches the live worker. With ``--verify`` it stops at exactly the source offsets the
live table reflects (the last position record of the live changelog) and compares every record.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition

from deliverytrack.models.common import utc_text
from deliverytrack.models.settings import Settings
from deliverytrack.streams.engine.changelog import POSITION_KEY, decode_position, record_id
from deliverytrack.streams.engine.loop import FoldEngine
from deliverytrack.streams.kafka.clients import new_consumer, refresh_metadata
from deliverytrack.streams.kafka.partitioner import partition_for
from deliverytrack.streams.topics import Topics

Targets = dict[TopicPartition, int]


async def _consumer(settings: Settings) -> AIOKafkaConsumer:
    consumer = new_consumer(
        settings,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        fetch_max_bytes=16_777_216,
        max_partition_fetch_bytes=8_388_608,
    )
    await consumer.start()
    return consumer


async def _read_all(
    settings: Settings, tps: list[TopicPartition]
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``tps`` up to their end offsets at the time of the call (a consumer of
    its own: re-assigning one consumer to other partitions lost records here)."""
    if not tps:
        return []
    consumer = await _consumer(settings)
    try:
        return await _read_assigned(consumer, tps)
    finally:
        await consumer.stop()


async def _read_assigned(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition]
) -> list[ConsumerRecord[bytes, bytes]]:
    for topic in {tp.topic for tp in tps}:
        await refresh_metadata(consumer, topic)  # a fresh client knows no topic yet
    consumer.assign(tps)
    ends = await consumer.end_offsets(tps)
    await consumer.seek_to_beginning(*tps)
    out: list[ConsumerRecord[bytes, bytes]] = []
    remaining = {tp for tp in tps if ends[tp] > 0}
    for tp in tps:
        if tp in remaining and await consumer.position(tp) >= ends[tp]:
            remaining.discard(tp)
    while remaining:
        fetched = await consumer.getmany(*remaining, timeout_ms=1000)
        for tp, records in fetched.items():
            out.extend(r for r in records if r.offset < ends[tp])
        for tp in list(remaining):
            if await consumer.position(tp) >= ends[tp]:
                remaining.discard(tp)
    return out


async def read_live_table(settings: Settings, topics: Topics) -> tuple[dict[str, bytes], Targets]:
    """The live table from its compacted changelog (latest value per messageId) and the
    source offsets it reflects (the last position record of each partition)."""
    consumer = await _consumer(settings)
    try:
        partitions = consumer.partitions_for_topic(topics.records_changelog)
        if partitions is None:
            await refresh_metadata(consumer)
            partitions = consumer.partitions_for_topic(topics.records_changelog) or set()
        tps = [TopicPartition(topics.records_changelog, p) for p in sorted(partitions)]
        records: dict[str, bytes] = {}
        targets: Targets = {}
        for msg in await _read_assigned(consumer, tps):
            if msg.key == POSITION_KEY and msg.value is not None:
                for topic, offset in decode_position(msg.value).items():
                    targets[TopicPartition(topic, msg.partition)] = offset
            elif (message_id := record_id(msg.key)) is not None:
                if msg.value is None:
                    records.pop(message_id, None)
                else:
                    records[message_id] = msg.value
        return records, targets
    finally:
        await consumer.stop()


async def _end_targets(settings: Settings, topics: Topics) -> Targets:
    consumer = await _consumer(settings)
    try:
        await refresh_metadata(consumer)
        tps = [
            TopicPartition(topic, p)
            for topic in topics.fold_inputs
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        ends: Targets = await consumer.end_offsets(tps) if tps else {}
        return ends
    finally:
        await consumer.stop()


def _diff(live: Mapping[str, Any], rebuilt: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(live) | set(rebuilt))
    return [
        f"{key}: live {live.get(key)!r} != replayed {rebuilt.get(key)!r}"
        for key in keys
        if live.get(key) != rebuilt.get(key)
    ]


async def run_replay(
    settings: Settings,
    *,
    replay_app_id: str | None = None,
    data_dir: Path | None = None,
    verify: bool = False,
    timeout_s: float = 3_600,
    out: TextIO = sys.stderr,
    max_differences: int = 10,
) -> int:
    """Rebuild the table into fresh state; with ``verify``, compare it with the live one.
    Returns the exit code: 0 (done, identical), 1 (differences), 2 (the fold stopped on an
    error: infrastructure, e.g. the broker refused an output), 3 (timed out)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    replay_app_id = replay_app_id or f"{settings.app_id}-replay-{stamp}"
    data_dir = data_dir or Path(settings.data_dir) / "replays"
    live_topics = Topics.of(settings)
    if verify:
        live, targets = await read_live_table(settings, live_topics)
        if not targets:
            print("replay: the live changelog has no position yet; nothing to verify", file=out)
            return 1
    else:
        live, targets = {}, await _end_targets(settings, live_topics)
    # The correlator's inputs are not replayed: the fold reads its recorded output.
    targets = {tp: end for tp, end in targets.items() if tp.topic in live_topics.fold_inputs}
    total = sum(targets.values())
    replay_settings = settings.model_copy(update={"app_id": replay_app_id, "data_dir": data_dir})
    topics = live_topics.for_replay(settings.topic_prefix, replay_app_id)
    engine = FoldEngine(
        replay_settings, topics, correlate=False, reroute_commands=False, stop_at=targets
    )
    print(
        f"replay: folding {total:,} input events of {settings.app_id!r} into {replay_app_id!r} "
        f"({data_dir})",
        file=out,
    )
    started = time.monotonic()
    await engine.start()
    try:
        while True:
            applied = engine.applied_offsets()
            done = sum(min(applied.get(tp, 0), end) for tp, end in targets.items())
            elapsed = max(time.monotonic() - started, 1e-6)
            rate = done / elapsed
            eta = (total - done) / rate if rate > 0 else float("inf")
            width = 30
            filled = int(width * done / total) if total else width
            print(
                f"\rreplay: [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} "
                f"{rate:,.0f} events/s ETA {eta:,.0f}s   ",
                end="",
                file=out,
                flush=True,
            )
            if done >= total and engine.ready.is_set():
                break
            if engine.failure.error is not None:
                print(f"\nreplay: the fold stopped: {engine.failure.error!r}", file=out)
                return 2
            if elapsed > timeout_s:
                print(f"\nreplay: timed out after {timeout_s:g}s", file=out)
                return 3
            await asyncio.sleep(0.2)
        print(f"\nreplay: done in {time.monotonic() - started:.1f}s", file=out)
        if not verify:
            return 0
        rebuilt: dict[str, bytes] = {}
        for partition in engine.assigned_partitions:
            store = engine.store(partition)
            if store is not None:
                rebuilt.update(store.iter_raw())
    finally:
        await engine.stop()
    differences: list[str] = []
    for message_id in sorted(set(live) | set(rebuilt)):
        if message_id not in rebuilt:
            differences.append(f"{message_id}: in the live table, not rebuilt")
        elif message_id not in live:
            differences.append(f"{message_id}: rebuilt, not in the live table")
        else:
            a, b = orjson.loads(live[message_id]), orjson.loads(rebuilt[message_id])
            differences.extend(f"{message_id}: {line}" for line in _diff(a, b))
    if differences:
        print(f"replay --verify: {len(differences)} difference(s); the first:", file=out)
        for line in differences[:max_differences]:
            print(f"  {line}", file=out)
        return 1
    print(f"replay --verify: {len(live):,} records, identical to the live table", file=out)
    return 0


# --- history ---------------------------------------------------------------------------------


async def message_history(settings: Settings, message_id: str) -> list[dict[str, Any]]:
    """Every event of one message across the input topics (and its provider reports), in the
    order the fold applies them: (timestamp, topic rank, offset)."""
    topics = Topics.of(settings)
    consumer = await _consumer(settings)
    try:
        await refresh_metadata(consumer)
        by_key = [*topics.fold_inputs, topics.poll_requests, topics.status_changes]
        # Read the partition counts now: assigning partitions narrows the client's metadata.
        counts = {
            topic: sorted(consumer.partitions_for_topic(topic) or ())
            for topic in [*by_key, topics.provider_webhooks]
        }

        def tp_of(topic: str, key: bytes) -> TopicPartition | None:
            partitions = counts[topic]
            if not partitions:
                return None
            return TopicPartition(topic, partition_for(key, partitions))

        key = message_id.encode()
        found: list[tuple[ConsumerRecord[bytes, bytes], str]] = []
        tps = [tp for topic in by_key if (tp := tp_of(topic, key)) is not None]
        for msg in await _read_all(settings, tps):
            if msg.key == key:
                found.append((msg, msg.topic))
        provider_keys = {
            f"{body['providerId']}:{body['providerMessageId']}"
            for msg, _ in found
            if msg.topic == topics.send_results
            and msg.value
            and isinstance(body := _json(msg.value), dict)
            and body.get("providerId")
            and body.get("providerMessageId")
        }
        for provider_key in sorted(provider_keys):
            tp = tp_of(topics.provider_webhooks, provider_key.encode())
            if tp is not None:
                for msg in await _read_all(settings, [tp]):
                    if msg.key == provider_key.encode():
                        found.append((msg, msg.topic))
    finally:
        await consumer.stop()
    rank = {topic: i for i, topic in enumerate([*by_key, topics.provider_webhooks])}
    found.sort(key=lambda item: (item[0].timestamp, rank[item[1]], item[0].offset))
    return [
        {
            "timestamp": timestamp_text(msg.timestamp),
            "topic": topic,
            "partition": msg.partition,
            "offset": msg.offset,
            "value": _json(msg.value),
        }
        for msg, topic in found
    ]


def timestamp_text(timestamp_ms: int) -> str:
    """A Kafka timestamp as the outputs write times; one a datetime cannot hold (a producer's
    own on a CreateTime topic may be anything) as its milliseconds."""
    try:
        return utc_text(datetime.fromtimestamp(timestamp_ms / 1000, UTC))
    except (ValueError, OverflowError, OSError):
        return f"{timestamp_ms} ms"


def _json(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace")


def format_history(events: list[dict[str, Any]], prefix: str) -> str:
    lines = [f"{'time':<32} {'topic':<34} {'event':<24} detail"]
    counts: dict[str, int] = defaultdict(int)
    for event in events:
        value = event["value"]
        topic = event["topic"].removeprefix(prefix)
        counts[topic] += 1
        if isinstance(value, dict):
            kind = str(value.get("eventType", "?"))
            detail = {
                k: value[k]
                for k in ("status", "previousStatus", "outcome", "checkSeq", "eventId")
                if k in value
            }
            text = " ".join(f"{k}={v}" for k, v in detail.items())
        else:
            kind, text = "(not JSON)", str(value)[:60]
        lines.append(f"{event['timestamp']:<32} {topic:<34} {kind:<24} {text}")
    return "\n".join(lines)
