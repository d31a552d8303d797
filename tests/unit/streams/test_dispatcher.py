"""The outbound webhook dispatcher's per-input boundary and its retry scheduling, with a real
local HTTP receiver and a stand-in for the Kafka producer: one bad status change, delivery or
retry record becomes a dead letter and the rest goes on; retries wait independently of each
other; a retry is delivered, dead-lettered or still pending (uncommitted), never dropped."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition

from deliverytrack.models.codec import encode
from deliverytrack.models.outbound import WebhookDelivery, WebhookEndpoint
from deliverytrack.models.settings import Settings
from deliverytrack.streams.webhooks.dispatcher import (
    MAX_METADATA_CHARS,
    WebhookDispatcher,
    decode_done,
    encode_done,
)
from deliverytrack.tables.outbound import deliveries_for


class Receiver:
    """Each path answers from a script of statuses, then 200."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[int]] = {}
        self.calls: dict[str, list[dict[str, str]]] = defaultdict(list)
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        await request.read()
        script = self.scripts.get(path, [])
        status = script.pop(0) if script else 200
        self.calls[path].append(dict(request.headers))
        return web.Response(status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def wait(self, path: str, count: int, timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            while len(self.calls[path]) < count:
                await asyncio.sleep(0.01)


class Producer:
    """Stands in for the dispatcher's producer: acknowledges every send, except that it can
    refuse the records of some topics (as the producer does for a record over
    ``max_request_size``) or fail them as an unreachable broker does."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.refuse: set[str] = set()
        self.unreachable: set[str] = set()

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None
    ) -> asyncio.Future[None]:
        if topic in self.refuse:
            raise MessageSizeTooLargeError("The message is too large")
        if topic in self.unreachable:
            raise KafkaTimeoutError()
        self.sent.append((topic, key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(value) for t, _, value in self.sent if t == topic]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


@pytest.fixture
async def sessions() -> AsyncIterator[list[aiohttp.ClientSession]]:
    opened: list[aiohttp.ClientSession] = []
    yield opened
    for session in opened:
        await session.close()


def dispatcher(
    sessions: list[aiohttp.ClientSession], producer: Producer, **settings: Any
) -> WebhookDispatcher:
    # The receivers are on loopback: allowed, as an operator would allow an internal host.
    worker = WebhookDispatcher(Settings(**{"webhook_allowed_hosts": ["127.0.0.1"], **settings}))
    worker._producer = producer  # type: ignore[assignment]
    worker._session = worker.new_session()
    sessions.append(worker._session)
    return worker


def endpoint(receiver: Receiver, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": name,
        "url": f"{receiver.base_url}/{name}",
        "retryDelayMs": 50,
        "backoffMultiplier": 1,
        **extra,
    }


def change(message_id: str, webhooks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "eventId": f"{message_id}:1",
        "messageId": message_id,
        "sequence": 1,
        "status": "SENT",
        "changedAt": "2026-11-23T09:00:00Z",
        "record": {"messageId": message_id, "providerId": "solapi", "webhooks": webhooks or []},
    }


def record(
    topic: str, offset: int, value: bytes, key: bytes = b"m"
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, 0, offset, 0, 0, key, value, None, len(key), len(value), ())


def original(letter: dict[str, Any]) -> bytes:
    return base64.b64decode(letter["valueBase64"])


async def test_each_bad_status_change_or_endpoint_is_a_dead_letter_and_the_rest_is_delivered(
    receiver: Receiver, sessions: list[aiohttp.ClientSession]
) -> None:
    producer = Producer()
    worker = dispatcher(sessions, producer, webhooks=[endpoint(receiver, "ops")])
    topic = worker.topics.status_changes
    hostile_endpoints = {
        "m-delay": endpoint(receiver, "delay", retryDelayMs=10**30),
        "m-idna": endpoint(receiver, "idna", url="http://a..b/x"),
        "m-label": endpoint(receiver, "label", url=f"http://{'a' * 64}.example/"),
    }
    values = [
        orjson.dumps(change("m-before", [endpoint(receiver, "own")])),
        b"{not json",
        orjson.dumps([1, 2]),
        orjson.dumps({**change("m-status"), "status": "DELIVERED\r\nX: 1"}),
        orjson.dumps({**change("m-record"), "record": [1]}),
        # (the standard library's json: orjson refuses integers past 64 bits)
        *(json.dumps(change(m, [e])).encode() for m, e in hostile_endpoints.items()),
        # Literal headers are dropped where the endpoint is decoded: refused, not called.
        orjson.dumps(change("m-crlf", [endpoint(receiver, "crlf", headers={"X-T": "a\r\nI: 1"})])),
        orjson.dumps(change("m-after", [endpoint(receiver, "own")])),
    ]
    messages = [record(topic, offset, value) for offset, value in enumerate(values)]

    await worker.handle_changes(messages)

    # Good changes delivered (both to the global endpoint and their own), nothing posted to
    # the hostile endpoints, and the global endpoint still got the changes that carried them.
    assert len(receiver.calls["own"]) == 2
    assert len(receiver.calls["ops"]) == 3 + len(hostile_endpoints)
    assert not any(receiver.calls[name] for name in ("crlf", "delay", "idna", "label"))
    letters = producer.on(worker.topics.dead_letters)
    by_offset = {letter["offset"]: letter for letter in letters}
    assert {o: by_offset[o]["reason"] for o in range(1, 5)} == {
        1: "malformed-json",
        2: "invalid-status-change",
        3: "invalid-status-change",
        4: "invalid-status-change",
    }
    for offset in range(5, 5 + len(hostile_endpoints)):
        assert by_offset[offset]["reason"] == "invalid-webhook-endpoint"
        assert original(by_offset[offset]) == values[offset]  # the original bytes
    assert "retryDelayMs" in by_offset[5]["error"] and "IDNA" in by_offset[6]["error"]
    assert len(letters) == len(values) - 3
    outcomes = producer.on(worker.topics.webhook_deliveries)
    assert len(outcomes) == 6 + len(hostile_endpoints) and worker.dead_letters == len(letters)
    (refused,) = [o for o in outcomes if o["outcome"] == "refused"]
    assert refused["deliveryId"] == "m-crlf:1:crlf" and "headers" in refused["error"]
    assert "a\r\nI" not in json.dumps(outcomes) and worker.refused == 1


async def test_an_exception_while_attempting_one_delivery_dead_letters_only_that_delivery(
    receiver: Receiver, sessions: list[aiohttp.ClientSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = Producer()
    worker = dispatcher(sessions, producer)
    post = worker._post

    async def flaky_post(delivery: WebhookDelivery) -> tuple[int | None, str | None, int]:
        if delivery.message_id == "m-bug":
            raise ValueError("Forbidden control character detected in headers")
        return await post(delivery)

    monkeypatch.setattr(worker, "_post", flaky_post)
    topic = worker.topics.status_changes
    values = [orjson.dumps(change(m, [endpoint(receiver, "own")])) for m in ("m-1", "m-bug", "m-2")]
    await worker.handle_changes([record(topic, o, v) for o, v in enumerate(values)])

    assert len(receiver.calls["own"]) == 2
    (letter,) = producer.on(worker.topics.dead_letters)
    assert letter["reason"] == "processing-error" and letter["offset"] == 1
    assert "m-bug:1:own" in letter["error"] and "ValueError" in letter["error"]
    assert original(letter) == values[1]


async def test_ids_that_are_not_header_safe_are_percent_encoded_in_headers(
    receiver: Receiver, sessions: list[aiohttp.ClientSession]
) -> None:
    producer = Producer()
    worker = dispatcher(sessions, producer)
    value = orjson.dumps(change("m 1\r\nX-Injected: é", [endpoint(receiver, "own")]))
    await worker.handle_changes([record(worker.topics.status_changes, 0, value)])
    (headers,) = receiver.calls["own"]
    assert headers["X-DeliveryTrack-Delivery"] == "m%201%0D%0AX-Injected:%20%C3%A9:1:own"
    assert "X-Injected" not in headers and producer.on(worker.topics.dead_letters) == []


async def test_an_output_the_producer_refuses_dead_letters_that_delivery_and_goes_on(
    receiver: Receiver, sessions: list[aiohttp.ClientSession]
) -> None:
    receiver.scripts = {"down": [500], "up": [500]}
    producer = Producer()
    worker = dispatcher(sessions, producer)
    producer.refuse.add(worker.topics.webhook_retries)  # e.g. MessageSizeTooLargeError
    topic = worker.topics.status_changes
    values = [
        orjson.dumps(change("m-1", [endpoint(receiver, "down")])),
        orjson.dumps(change("m-2", [endpoint(receiver, "fine")])),
    ]
    await worker.handle_changes([record(topic, o, v) for o, v in enumerate(values)])

    (letter,) = producer.on(worker.topics.dead_letters)
    assert letter["reason"] == "output-refused" and letter["offset"] == 0
    assert "MessageSizeTooLargeError" in letter["error"]
    assert [o["outcome"] for o in producer.on(worker.topics.webhook_deliveries)] == ["delivered"]


async def test_a_retry_that_would_be_larger_than_the_topics_accept_is_a_dead_letter(
    receiver: Receiver, sessions: list[aiohttp.ClientSession]
) -> None:
    receiver.scripts = {"down": [500]}
    producer = Producer()
    worker = dispatcher(sessions, producer, max_record_bytes=16_384)
    big = change("m-big", [endpoint(receiver, "down")])
    big["record"]["metadata"] = {"blob": ""}
    # The status change itself is just within the limit; its retry (the change plus the
    # delivery around it) is not.
    size = worker.settings.max_message_bytes - 10
    big["record"]["metadata"]["blob"] = "x" * (size - len(orjson.dumps(big)))
    value = orjson.dumps(big)
    assert len(value) == size
    await worker.handle_changes([record(worker.topics.status_changes, 0, value)])
    (letter,) = producer.on(worker.topics.dead_letters)
    assert letter["reason"] == "output-too-large"
    assert letter["valueSize"] > worker.settings.dead_letter_value_bytes  # bounded copy
    assert letter["valueTruncated"] is True
    assert producer.on(worker.topics.webhook_retries) == []


async def test_an_unreachable_broker_is_not_a_dead_letter_but_stops_the_loop(
    receiver: Receiver, sessions: list[aiohttp.ClientSession]
) -> None:
    producer = Producer()
    worker = dispatcher(sessions, producer)
    producer.unreachable.add(worker.topics.webhook_deliveries)
    value = orjson.dumps(change("m-1", [endpoint(receiver, "own")]))
    with pytest.raises(KafkaTimeoutError):
        await worker.handle_changes([record(worker.topics.status_changes, 0, value)])
    assert producer.on(worker.topics.dead_letters) == []


# --- retries -------------------------------------------------------------------------------

P0 = TopicPartition("retries", 0)


def retry(receiver: Receiver, name: str, due: datetime, message_id: str = "m-1") -> bytes:
    endpoints = [WebhookEndpoint.model_validate(endpoint(receiver, name, maxRetries=3))]
    (delivery,) = deliveries_for(change(message_id), endpoints, due)
    return encode(delivery.model_copy(update={"attempt": 2, "not_before": due}))


async def test_a_retry_due_later_never_holds_up_one_due_sooner(
    receiver: Receiver, sessions: list[aiohttp.ClientSession]
) -> None:
    producer = Producer()
    worker = dispatcher(sessions, producer)
    worker._retry_assigned = {P0}
    now = datetime.now(UTC)
    worker.schedule_retry(P0, record(P0.topic, 0, retry(receiver, "far", now + timedelta(hours=1))))
    worker.schedule_retry(P0, record(P0.topic, 1, retry(receiver, "near", now)))
    soon = now + timedelta(milliseconds=300)
    worker.schedule_retry(P0, record(P0.topic, 2, retry(receiver, "soon", soon)))
    await receiver.wait("near", 1)
    await receiver.wait("soon", 1)
    async with asyncio.timeout(5):  # the receiver has the call; the attempt ends just after
        while worker.pending_retries > 1:
            await asyncio.sleep(0.01)
    assert receiver.calls["far"] == [] and worker.pending_retries == 1
    assert receiver.calls["soon"][0]["X-DeliveryTrack-Attempt"] == "2"
    # Committed only up to the retry still waiting; the ones done travel in the metadata.
    assert worker._retry_offsets.to_commit([P0]) == {P0: OffsetAndMetadata(0, "dt1:1-2")}

    # A revoke (or a stop) cancels the waiting retry: still uncommitted, read again later.
    await worker._drain_retries({P0})
    assert worker.pending_retries == 0 and receiver.calls["far"] == []
    assert worker._retry_offsets.to_commit([P0]) == {P0: OffsetAndMetadata(0, "dt1:1-2")}
    assert [o["outcome"] for o in producer.on(worker.topics.webhook_deliveries)] == [
        "delivered",
        "delivered",
    ]


async def test_an_undecodable_retry_is_a_dead_letter_not_a_silent_skip(
    receiver: Receiver, sessions: list[aiohttp.ClientSession]
) -> None:
    producer = Producer()
    worker = dispatcher(sessions, producer)
    worker._retry_assigned = {P0}
    now = datetime.now(UTC)
    bad_endpoint = orjson.loads(retry(receiver, "x", now))
    bad_endpoint["endpoint"]["url"] = "http://a..b/x"
    values = [
        b"\xff not json",
        orjson.dumps({"deliveryId": "d"}),
        orjson.dumps(bad_endpoint),
        retry(receiver, "good", now),
    ]
    for offset, value in enumerate(values):
        worker.schedule_retry(P0, record(P0.topic, offset, value))
    await receiver.wait("good", 1)
    async with asyncio.timeout(5):
        while worker.pending_retries:
            await asyncio.sleep(0.01)
    letters = producer.on(worker.topics.dead_letters)
    assert sorted((letter["offset"], letter["reason"]) for letter in letters) == [
        (0, "invalid-retry"),
        (1, "invalid-retry"),
        (2, "invalid-retry"),
    ]
    assert all(original(letter) == values[letter["offset"]] for letter in letters)
    assert receiver.calls["x"] == []
    assert worker._retry_offsets.to_commit([P0]) == {P0: OffsetAndMetadata(4, "")}


async def test_a_failed_retry_schedules_the_next_one_and_the_last_one_is_a_dead_letter(
    receiver: Receiver, sessions: list[aiohttp.ClientSession]
) -> None:
    receiver.scripts = {"down": [503, 503]}
    producer = Producer()
    worker = dispatcher(sessions, producer)
    worker._retry_assigned = {P0}
    now = datetime.now(UTC)
    first = orjson.loads(retry(receiver, "down", now))
    worker.schedule_retry(P0, record(P0.topic, 0, orjson.dumps(first)))
    last = {**first, "attempt": 4}  # maxRetries=3: the 4th attempt is the last
    worker.schedule_retry(P0, record(P0.topic, 1, orjson.dumps(last)))
    async with asyncio.timeout(5):
        while worker.pending_retries:
            await asyncio.sleep(0.01)
    (next_retry,) = producer.on(worker.topics.webhook_retries)
    assert next_retry["attempt"] == 3
    (letter,) = producer.on(worker.topics.dead_letters)
    assert letter["reason"] == "webhook-undeliverable" and "attempt 4" in letter["error"]
    assert orjson.loads(original(letter))["deliveryId"] == first["deliveryId"]


async def test_retries_done_before_a_restart_are_skipped_from_the_commit_metadata(
    receiver: Receiver, sessions: list[aiohttp.ClientSession]
) -> None:
    producer = Producer()
    worker = dispatcher(sessions, producer)

    class Coordinator:
        async def fetch_committed_offsets(self, tps: list[TopicPartition]) -> dict[Any, Any]:
            return {P0: OffsetAndMetadata(3, "dt1:1-2")}

    class Consumer:
        _coordinator = Coordinator()

    worker._retry_consumer = Consumer()  # type: ignore[assignment]
    await worker._retries_assigned({P0})
    now = datetime.now(UTC)
    for offset in (3, 4, 5, 6):
        worker.schedule_retry(P0, record(P0.topic, offset, retry(receiver, f"e{offset}", now)))
    await receiver.wait("e3", 1)
    await receiver.wait("e6", 1)
    async with asyncio.timeout(5):
        while worker.pending_retries:
            await asyncio.sleep(0.01)
    assert receiver.calls["e4"] == [] and receiver.calls["e5"] == []
    assert worker._retry_offsets.to_commit([P0]) == {P0: OffsetAndMetadata(7, "")}


def test_done_offsets_round_trip_through_the_commit_metadata_within_its_limit() -> None:
    assert encode_done(10, []) == ""
    assert encode_done(10, {9, 11, 12, 13, 15}) == "dt1:1-3,5"
    assert decode_done(10, "dt1:1-3,5") == {11, 12, 13, 15}
    for junk in ("", "other", "dt1:", "dt1:x", "dt1:3-1", "dt1:-1", "dt1:0-99999999"):
        assert decode_done(10, junk) == set()
    many = set(range(0, 20_000, 2))
    metadata = encode_done(0, many)
    assert len(metadata) <= MAX_METADATA_CHARS
    kept = decode_done(0, metadata)
    assert kept and kept <= many and min(kept) == 0  # the lowest offsets are kept
