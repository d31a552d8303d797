"""The poll loop commits a partition only up to its oldest request still in flight, never past
a call that did not finish, and skips requests whose lease has ended."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from aiokafka.structs import ConsumerRecord, TopicPartition

from deliverytrack.models.codec import encode
from deliverytrack.models.enums import MessageType
from deliverytrack.models.events import PollRequested, ProviderStatus
from deliverytrack.models.settings import Settings
from deliverytrack.streams.poll_loop import PollLoop, _Offsets
from deliverytrack.streams.poller import Poller
from deliverytrack.streams.providers.base import StatusQuery

P0, P1 = TopicPartition("t", 0), TopicPartition("t", 1)


def test_commit_stops_below_the_oldest_call_in_flight() -> None:
    offsets = _Offsets()
    for offset in (10, 11, 12):
        offsets.started(P0, offset)
    offsets.finished(P0, 11)
    offsets.finished(P0, 12)
    assert offsets.committable([P0]) == {P0: 10}  # 10 is still being polled
    offsets.finished(P0, 10)
    assert offsets.committable([P0]) == {P0: 13}


def test_only_new_positions_of_the_asked_partitions_are_committable() -> None:
    offsets = _Offsets()
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
