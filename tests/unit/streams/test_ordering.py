"""The cross-topic ordering buffer (streams/engine/ordering.py), without a broker: what a fetch
may release is what a replay of the topics would fold first, whatever order the topics' fetches
arrived in."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka.structs import ConsumerRecord, TopicPartition

from deliverytrack.streams.engine.ordering import OrderingBuffer

SENDS, COMMANDS = "send-results", "commands"
TOPICS = (SENDS, COMMANDS)
MARGIN = 200


def record(topic: str, offset: int, timestamp: int, partition: int = 0) -> ConsumerRecord:  # type: ignore[type-arg]
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=timestamp,
        timestamp_type=1,
        key=b"m",
        value=b"{}",
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=2,
        headers=(),
    )


@dataclass
class Consumer:
    """Per topic-partition: the log end, where the consumer is, when it last fetched."""

    end: dict[TopicPartition, int] = field(default_factory=dict)
    at: dict[TopicPartition, int] = field(default_factory=dict)
    polled: dict[TopicPartition, int] = field(default_factory=dict)
    held: set[TopicPartition] = field(default_factory=set)

    def paused(self) -> set[TopicPartition]:
        return self.held

    def last_stable_offset(self, tp: TopicPartition) -> int | None:
        return self.end.get(tp)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.end.get(tp)

    async def position(self, tp: TopicPartition) -> int:
        return self.at.get(tp, 0)

    def last_poll_timestamp(self, tp: TopicPartition) -> int | None:
        return self.polled.get(tp)


def tp(topic: str, partition: int = 0) -> TopicPartition:
    return TopicPartition(topic, partition)


def buffer(cap: int = 1_000) -> OrderingBuffer:
    return OrderingBuffer(TOPICS, MARGIN, cap)


async def test_a_topic_with_more_to_fetch_holds_the_others_at_its_last_timestamp() -> None:
    ordering = buffer()
    # send-results fetched up to 2,000 with more behind; commands read to their end at 10,000.
    consumer = Consumer(
        end={tp(SENDS): 50, tp(COMMANDS): 3},
        at={tp(SENDS): 2, tp(COMMANDS): 3},
        polled={tp(COMMANDS): 10_000},
    )
    ordering.add({tp(SENDS): [record(SENDS, 0, 1_000), record(SENDS, 1, 2_000)]}, {0})
    ordering.add({tp(COMMANDS): [record(COMMANDS, 0, 1_500), record(COMMANDS, 1, 2_500)]}, {0})
    released = await ordering.release(consumer, [0])
    # Below 2,000 only: the command at 2,500 may still be preceded by a send result not fetched.
    assert [r.timestamp for r in released[tp(SENDS)]] == [1_000]
    assert [r.timestamp for r in released[tp(COMMANDS)]] == [1_500]
    assert ordering.pending(tp(SENDS)) == 1 and ordering.pending(tp(COMMANDS)) == 1
    assert ordering.watermarks == {0: (2_000.0, 2)}


async def test_topics_read_to_their_end_release_up_to_the_last_fetch_less_the_margin() -> None:
    ordering = buffer()
    consumer = Consumer(
        end={tp(SENDS): 2, tp(COMMANDS): 1},
        at={tp(SENDS): 2, tp(COMMANDS): 1},
        polled={tp(SENDS): 5_000, tp(COMMANDS): 5_000},
    )
    ordering.add({tp(SENDS): [record(SENDS, 0, 4_700), record(SENDS, 1, 4_900)]}, {0})
    ordering.add({tp(COMMANDS): [record(COMMANDS, 0, 4_750)]}, {0})
    released = await ordering.release(consumer, [0])
    assert [r.timestamp for r in released[tp(SENDS)]] == [4_700]  # 4,900 >= 5,000 - 200
    assert [r.timestamp for r in released[tp(COMMANDS)]] == [4_750]
    assert ordering.watermarks == {0: (4_800.0, 1)}


async def test_a_topic_never_fetched_holds_everything() -> None:
    ordering = buffer()
    consumer = Consumer(end={tp(SENDS): 1}, at={tp(SENDS): 1}, polled={tp(SENDS): 9_000})
    ordering.add({tp(SENDS): [record(SENDS, 0, 1_000)]}, {0})
    assert await ordering.release(consumer, [0]) == {}
    assert ordering.watermarks == {0: (float("-inf"), 1)}


async def test_a_paused_topic_does_not_hold_the_others_back() -> None:
    ordering = buffer()
    consumer = Consumer(
        end={tp(SENDS): 1}, at={tp(SENDS): 1}, polled={tp(SENDS): 9_000}, held={tp(COMMANDS)}
    )
    ordering.add({tp(SENDS): [record(SENDS, 0, 1_000)]}, {0})
    released = await ordering.release(consumer, [0])
    assert [r.offset for r in released[tp(SENDS)]] == [0]


async def test_past_the_cap_a_partition_is_released_without_its_watermark() -> None:
    ordering = buffer(cap=2)
    consumer = Consumer(end={tp(SENDS): 9}, at={tp(SENDS): 3})  # commands never fetched
    ordering.add({tp(SENDS): [record(SENDS, n, 1_000 + n) for n in range(3)]}, {0})
    released = await ordering.release(consumer, [0])
    assert [r.offset for r in released[tp(SENDS)]] == [0, 1, 2]
    assert ordering.watermarks == {0: (float("-inf"), 0)}  # the real watermark, for /metrics


async def test_a_replay_bound_keeps_records_at_or_past_it_buffered() -> None:
    ordering = buffer()
    consumer = Consumer(
        end={tp(SENDS): 3, tp(COMMANDS): 0},
        at={tp(SENDS): 3, tp(COMMANDS): 0},
        polled={tp(SENDS): 9_000, tp(COMMANDS): 9_000},
    )
    ordering.add({tp(SENDS): [record(SENDS, n, 1_000 + n) for n in range(3)]}, {0})
    released = await ordering.release(consumer, [0], stop_at={tp(SENDS): 2})
    assert [r.offset for r in released[tp(SENDS)]] == [0, 1]
    assert ordering.pending(tp(SENDS)) == 1
    assert ordering.watermarks[0][1] == 1
    # Still held on the next release: the bound does not move.
    assert await ordering.release(consumer, [0], stop_at={tp(SENDS): 2}) == {}


async def test_records_of_partitions_not_owned_are_dropped_and_clear_forgets_all() -> None:
    ordering = buffer()
    ordering.add({tp(SENDS, 1): [record(SENDS, 0, 1_000, partition=1)]}, {0})
    assert ordering.pending(tp(SENDS, 1)) == 0
    ordering.add({tp(SENDS): [record(SENDS, 0, 1_000)]}, {0})
    ordering.clear()
    assert ordering.pending(tp(SENDS)) == 0
    consumer = Consumer(end={tp(SENDS): 5}, at={tp(SENDS): 1})
    assert await ordering.release(consumer, [0]) == {}
