"""What a real worker writes on every public topic fits the published contract (docs/schemas/),
keys included: status changes, dead letters (from the fold, the correlator and the webhook
dispatcher), a failover request and its outcome on commands, a record deletion, webhook
attempts of every outcome, and the reports the webhook ingress publishes."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from deliverytrack.models.enums import MessageType
from deliverytrack.models.enums import TrackingStatus as S
from deliverytrack.models.events import PurgeRecord
from deliverytrack.streams import contract
from tests.factories import T0, send_recorded_factory, update_status_factory
from tests.integration.test_failover import alimtalk
from tests.integration.test_outbound_webhooks import Receiver
from tests.integration.test_webhooks import PROVIDER, SECRET, post, report, signed
from tests.schema_check import problems

Records = list[ConsumerRecord[bytes, bytes]]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


def expected_key(suffix: str, value: dict[str, Any]) -> bytes | None:
    """The key the AsyncAPI document gives each topic."""
    if suffix == "provider-webhooks":
        return f"{value['providerId']}:{value['providerMessageId']}".encode()
    if suffix == "dead-letters":  # the original key, when it had one
        return base64.b64decode(value["keyBase64"]) if "keyBase64" in value else None
    return str(value["messageId"]).encode()


def events(messages: Records) -> list[dict[str, Any]]:
    return [orjson.loads(m.value) for m in messages]


async def test_every_public_topic_carries_what_the_contract_says(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any, receiver: Receiver
) -> None:
    settings = settings_factory(
        api_failover={"enabled": True},
        providers={PROVIDER: {"kind": "none", "webhookSecret": SECRET}},
        # An unmatched report is dead-lettered soon (the due-check timer finds it); nothing is
        # polled (initialDelayMs).
        webhook_hold_ms=1_500,
        polling={"initialDelayMs": 3_600_000, "intervalMs": 200},
    )
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    topics = io.topics
    receiver.scripts = {"own": [500], "down": [503]}
    endpoints = (
        {"id": "own", "url": f"{receiver.base_url}/own", "retryDelayMs": 200},
        {"id": "down", "url": f"{receiver.base_url}/down", "maxRetries": 0},
        {"id": "inside", "url": "http://10.255.255.1/hook", "events": ["message.delivered"]},
    )
    sms = send_recorded_factory("ct-sms", provider_id=PROVIDER, webhooks=endpoints)
    await io.send(topics.send_results, "ct-sms", sms)
    await io.send(topics.send_results, "ct-ak", alimtalk("ct-ak"))
    failed = update_status_factory(S.FAILED, "ct-ak", provider_status_code="3104")
    await io.send(topics.commands, "ct-ak", failed)
    await io.send(topics.send_results, "bad-1", b"not json")
    await io.send(topics.send_results, "bad-2", {"eventId": "bad-2", "eventType": "SendRecorded"})
    await worker.arecord("ct-sms")
    url = f"{worker.webhook_url}/webhooks/{PROVIDER}"
    async with aiohttp.ClientSession() as session:
        for pmid in (sms.provider_message_id, "ghost-1"):
            body = orjson.dumps(report(pmid, "DELIVERED", statusCode="4000"))
            status, _ = await post(session, url, body, signed(body))
            assert status == 200
    await worker.arecord("ct-sms", lambda r: r["status"] == "DELIVERED")
    (request,) = events(await io.read(topics.failover_requests, lambda ms: len(ms) >= 1))
    fallback = send_recorded_factory(
        request["fallbackMessageId"], type=MessageType.LMS, failover_of="ct-ak"
    )
    await io.send(topics.send_results, fallback.message_id, fallback)
    await receiver.wait("own", 3)  # SENT (500, then 200), DELIVERED
    purge = PurgeRecord(event_id="purge-ct-sms", message_id="ct-sms", at=T0, reason="contract")
    await io.send(topics.commands, "ct-sms", purge)

    def has(field: str, *wanted: str) -> Any:
        return lambda ms: set(wanted) <= {e.get(field) for e in events(ms)}

    letters = ("malformed-json", "schema-invalid", "unmatched-report", "webhook-undeliverable")
    outcomes = ("delivered", "failed", "exhausted", "refused")
    read: dict[str, Records] = {
        "status-changes": await io.read(
            topics.status_changes, has("messageId", fallback.message_id)
        ),
        "failover-requests": await io.read(topics.failover_requests, lambda ms: len(ms) >= 1),
        "commands": await io.read(topics.commands, has("eventType", "RecordFailoverOutcome")),
        "provider-webhooks": await io.read(topics.provider_webhooks, lambda ms: len(ms) >= 2),
        "dead-letters": await io.read(topics.dead_letters, has("reason", *letters)),
        "webhook-deliveries": await io.read(topics.webhook_deliveries, has("outcome", *outcomes)),
        "record-deletions": await io.read(topics.record_deletions, has("reason", "purge")),
        # What the test published as a sending app: the schema refuses the two the worker
        # dead-lettered, and only those.
        "send-results": await io.read(topics.send_results, lambda ms: len(ms) >= 5),
    }
    assert set(read) == {contract.topic_suffix(topic) for topic in contract.PUBLIC_TOPICS}
    refused = {b"bad-1", b"bad-2"}
    for suffix, messages in read.items():
        for message in messages:
            if suffix == "send-results" and message.key in refused:
                refused.remove(message.key)
                assert message.key == b"bad-1" or problems(suffix, message.value)
                continue
            value = orjson.loads(message.value)
            assert not problems(suffix, value), (suffix, value, problems(suffix, value))
            assert message.key == expected_key(suffix, value), (suffix, message.key, value)
    assert not refused
    changes = events(read["status-changes"])
    first = next(e for e in changes if e["messageId"] == "ct-sms" and e["sequence"] == 1)
    assert first["previousStatus"] is None
    assert {e["source"] for e in changes} >= {"webhook", "manual"}
    assert worker.stop() == 0
