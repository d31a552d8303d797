"""The poll loop commits a partition only up to its oldest request still in flight, never past
a call that did not finish, and skips requests whose lease has ended; whatever goes wrong with
one request makes it a dead letter (or, the broker being unreachable, a counted give-up that the
lease retries), never the end of the loop."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord, TopicPartition

from deliverytrack.models.codec import encode
from deliverytrack.models.enums import MessageType
from deliverytrack.models.events import PollRequested, ProviderStatus
from deliverytrack.models.settings import Settings
from deliverytrack.streams.kafka.offsets import PendingOffsets
from deliverytrack.streams.polling.loop import PollLoop
from deliverytrack.streams.polling.poller import Poller
from deliverytrack.streams.providers.base import StatusQuery

P0, P1 = TopicPartition("t", 0), TopicPartition("t", 1)


def test_commit_stops_below_the_oldest_call_in_flight() -> None:
    offsets = PendingOffsets()
    for offset in (10, 11, 12):
        offsets.started(P0, offset)
    offsets.finished(P0, 11)
    offsets.finished(P0, 12)
    assert offsets.committable([P0]) == {P0: 10}  # 10 is still being polled
    offsets.finished(P0, 10)
    assert offsets.committable([P0]) == {P0: 13}


def test_only_new_positions_of_the_asked_partitions_are_committable() -> None:
    offsets = PendingOffsets()
    offsets.started(P0, 5)
    offsets.started(P1, 7)
    offsets.finished(P0, 5)
    offsets.finished(P1, 7)
    assert offsets.committable([P0]) == {P0: 6}
    offsets.committed.update({P0: 6})
    assert offsets.committable([P0, P1]) == {P1: 8}  # P0 has nothing new
    offsets.started(P1, 8)
    offsets.forget([P1])
    assert offsets.committable([P0, P1]) == {}
    offsets.finished(P1, 8)  # a call that ends after its partition was revoked: ignored
    assert offsets.committable([P1]) == {}
    assert P1 not in offsets.in_flight or not offsets.in_flight[P1]


class _Blocking:
    """A provider whose answer waits for the test."""

    supports_status = True

    def __init__(self) -> None:
        self.answer = asyncio.Event()

    async def get_delivery_status(self, query: StatusQuery) -> ProviderStatus | None:
        await self.answer.wait()
        return None


class _AckedProducer:
    """Stands in for the engine's producer: every send is acknowledged at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
        self.sent.append((topic, key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _request(offset: int, issued_at: datetime) -> ConsumerRecord[bytes, bytes]:
    request = PollRequested(
        event_id=f"m-{offset}:due:1",
        message_id=f"m-{offset}",
        check_seq=1,
        provider_id="sim",
        provider_message_id=f"pm-{offset}",
        type=MessageType.SMS,
        to="01012345678",
        requested_at=issued_at,
        due_at=issued_at,
        issued_at=issued_at,
    )
    value = encode(request)
    key = request.message_id.encode()
    return ConsumerRecord("t", 0, offset, 0, 0, key, value, None, len(key), len(value), ())


async def test_a_cancelled_call_is_not_committable_and_a_finished_one_is() -> None:
    provider = _Blocking()
    now = datetime.now(UTC)
    loop = PollLoop(Settings(), Poller({"sim": provider}, timeout_s=5), clock=lambda: now)
    producer = _AckedProducer()
    tasks = []
    for offset in (0, 1):
        await loop._slots.acquire()
        loop._offsets.started(P0, offset)
        handle = loop._handle(P0, _request(offset, now), producer)  # type: ignore[arg-type]
        tasks.append(asyncio.create_task(handle))
    await asyncio.sleep(0.01)
    tasks[0].cancel()  # e.g. the worker stopping mid-call
    provider.answer.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert loop.stats.observations == 1 and len(producer.sent) == 1
    assert loop._offsets.committable([P0]) == {P0: 0}  # offset 0 will be polled again
    assert loop._slots._value == Settings().polling.concurrency  # every slot given back


async def test_a_request_past_its_lease_is_skipped_without_a_call() -> None:
    provider = _Blocking()
    now = datetime.now(UTC)
    loop = PollLoop(Settings(), Poller({"sim": provider}, timeout_s=5), clock=lambda: now)
    producer = _AckedProducer()
    stale = now - timedelta(milliseconds=Settings().polling.lease_ms + 1)
    await loop._slots.acquire()
    loop._offsets.started(P0, 0)
    await loop._handle(P0, _request(0, stale), producer)  # type: ignore[arg-type]
    assert loop.stats.skipped_expired == 1 and loop.poller.calls == 0 and producer.sent == []
    assert loop._offsets.committable([P0]) == {P0: 1}


# --- the per-input boundary: one request never ends the loop, nor is it dropped silently ---------


class _Producer(_AckedProducer):
    """Acknowledges every send, except that it can refuse a topic's records (as the producer
    or the broker does for a record that is too large) or fail them as an unreachable broker."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse: set[str] = set()
        self.unreachable: set[str] = set()

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
        if topic in self.refuse:
            raise MessageSizeTooLargeError("too large")
        if topic in self.unreachable:
            raise KafkaTimeoutError()
        return await super().send(topic, value, key)

    def letters(self) -> list[dict[str, Any]]:
        return [orjson.loads(v) for t, _, v in self.sent if t.endswith("dead-letters")]


def _raw(offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("t", 0, offset, 0, 0, b"k", value, None, 1, len(value), ())


async def _handled(loop: PollLoop, producer: _Producer, msg: ConsumerRecord[bytes, bytes]) -> None:
    await loop._slots.acquire()
    loop._offsets.started(P0, msg.offset)
    await loop._handle(P0, msg, producer)  # type: ignore[arg-type]


def _loop(provider: object, **settings: Any) -> PollLoop:
    now = datetime.now(UTC)
    poller = Poller({"sim": provider}, timeout_s=5)  # type: ignore[dict-item]
    return PollLoop(Settings(**settings), poller, clock=lambda: now)


async def test_an_undecodable_request_is_a_dead_letter_with_its_bytes() -> None:
    provider = _Blocking()
    provider.answer.set()
    loop, producer = _loop(provider), _Producer()
    values = [b"{not json", b'{"eventType": "PollRequested"}', b"\xff\xfe"]
    for offset, value in enumerate(values):
        await _handled(loop, producer, _raw(offset, value))
    letters = producer.letters()
    assert [(letter["offset"], letter["reason"]) for letter in letters] == [
        (0, "malformed-json"),
        (1, "schema-invalid"),
        (2, "malformed-json"),
    ]
    assert [base64.b64decode(letter["valueBase64"]) for letter in letters] == values
    assert loop.stats.undecodable == 3 and loop.stats.dead_letters == 3
    assert loop._offsets.committable([P0]) == {P0: 3}  # nothing stuck in flight
    assert loop._slots._value == Settings().polling.concurrency


async def test_an_oversized_request_is_a_bounded_dead_letter() -> None:
    loop, producer = (
        _loop(_Blocking(), max_input_bytes=2_048, dead_letter_value_bytes=100),
        _Producer(),
    )
    await _handled(loop, producer, _raw(0, b"{" + b"x" * 9_999))
    (letter,) = producer.letters()
    assert letter["reason"] == "too-large" and letter["valueSize"] == 10_000
    assert len(base64.b64decode(letter["valueBase64"])) == 100 and letter["valueTruncated"]


async def test_a_poller_bug_on_one_request_is_a_dead_letter_and_the_next_is_polled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = _Blocking()
    provider.answer.set()
    loop, producer = _loop(provider), _Producer()
    poll = loop.poller.poll

    async def buggy(request: PollRequested) -> Any:
        if request.message_id == "m-0":
            raise RuntimeError("a bug")
        return await poll(request)

    monkeypatch.setattr(loop.poller, "poll", buggy)
    now = loop.clock()
    await _handled(loop, producer, _request(0, now))
    await _handled(loop, producer, _request(1, now))
    (letter,) = producer.letters()
    assert letter["reason"] == "processing-error" and "RuntimeError: a bug" in letter["error"]
    assert loop.stats.observations == 1
    assert loop._offsets.committable([P0]) == {P0: 2}


async def test_an_observation_the_broker_refuses_dead_letters_its_request() -> None:
    provider = _Blocking()
    provider.answer.set()
    loop, producer = _loop(provider), _Producer()
    producer.refuse.add(loop.topics.observations)
    await _handled(loop, producer, _request(0, loop.clock()))
    (letter,) = producer.letters()
    assert letter["reason"] == "output-refused" and "MessageSizeTooLarge" in letter["error"]
    assert loop.stats.observations == 0 and loop._offsets.committable([P0]) == {P0: 1}


async def test_an_unreachable_broker_gives_the_request_up_counted_for_the_lease_to_retry() -> None:
    provider = _Blocking()
    provider.answer.set()
    loop, producer = _loop(provider), _Producer()
    producer.unreachable.update({loop.topics.observations, loop.topics.dead_letters})
    await _handled(loop, producer, _request(0, loop.clock()))
    assert loop.stats.given_up == 1 and producer.sent == []
    # An undecodable one whose dead letter cannot be published either: given up, counted.
    await _handled(loop, producer, _raw(1, b"nope"))
    assert loop.stats.given_up == 2 and loop.stats.dead_letters == 0
    assert loop._offsets.committable([P0]) == {P0: 2}
