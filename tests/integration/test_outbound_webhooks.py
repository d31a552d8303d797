"""Outbound webhooks on the real broker with real local HTTP receivers: signed, retried through
Kafka, dead-lettered after the last retry, and not lost when the worker is killed; retries
independent of each other, and hostile endpoints, status changes and retry records dead-lettered
while the dispatcher goes on."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from deliverytrack.models.codec import encode
from deliverytrack.models.enums import TrackingStatus as S
from deliverytrack.streams.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.factories import send_recorded_factory, update_status_factory

SECRET = "outbound-secret"


class Receiver:
    """A local HTTP receiver: each path answers from a script of statuses, then 200."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[int]] = {}
        self.redirects: dict[str, str] = {}
        self.calls: dict[str, list[tuple[int, dict[str, str], bytes]]] = defaultdict(list)
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        body = await request.read()
        script = self.scripts.get(path, [])
        status = script.pop(0) if script else 200
        self.calls[path].append((status, dict(request.headers), body))
        if path in self.redirects:
            raise web.HTTPFound(self.redirects[path])
        return web.json_response({"ok": status == 200}, status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{self.port}"

    async def wait(self, path: str, count: int, timeout: float = 30) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.calls[path]) < count:
            if loop.time() > deadline:
                pytest.fail(f"{path}: {len(self.calls[path])} calls, wanted {count}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


def endpoint(receiver: Receiver, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": name,
        "url": f"{receiver.base_url}/{name}",
        "events": ["message.delivered"],
        "retryDelayMs": 300,
        "backoffMultiplier": 1,
        **extra,
    }


async def test_retries_until_delivered_signed_and_dead_letters_after_the_last_retry(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any, receiver: Receiver
) -> None:
    receiver.scripts = {"flaky": [500, 503], "down": [503] * 10}
    settings = settings_factory(
        webhooks=[
            endpoint(receiver, "flaky", secretRef="main", maxRetries=3),
            endpoint(receiver, "down", maxRetries=2),
        ],
        webhook_secrets={"main": SECRET},
    )
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    own = {"id": "own", "url": f"{receiver.base_url}/own", "events": ["*"]}
    send = send_recorded_factory("ow-1", webhooks=(own,))
    await io.send(io.topics.send_results, "ow-1", send)
    await io.send(io.topics.commands, "ow-1", update_status_factory(S.DELIVERED, "ow-1"))

    await receiver.wait("flaky", 3)
    statuses = [status for status, _, _ in receiver.calls["flaky"]]
    assert statuses == [500, 503, 200]  # the event arrived once, on the third attempt
    _, headers, body = receiver.calls["flaky"][-1]
    assert headers[SIGNATURE_HEADER] == sign(SECRET, int(headers[TIMESTAMP_HEADER]), body)
    assert headers["X-DeliveryTrack-Attempt"] == "3"
    event = orjson.loads(body)
    assert event["type"] == "message.delivered" and event["id"] == "ow-1:2"
    assert event["data"]["status"] == "DELIVERED" and event["metadata"]["messageId"] == "ow-1"
    # The message's own endpoint gets every change, unsigned (no secretRef).
    await receiver.wait("own", 2)
    assert [orjson.loads(b)["type"] for _, _, b in receiver.calls["own"]] == [
        "message.sent",
        "message.delivered",
    ]
    assert SIGNATURE_HEADER not in receiver.calls["own"][0][1]

    letters = await io.read_json(
        io.topics.dead_letters, lambda es: any(e["reason"] == "webhook-undeliverable" for e in es)
    )
    (letter,) = [e for e in letters if e["reason"] == "webhook-undeliverable"]
    assert "/down" in letter["error"] and "attempt 3" in letter["error"]
    assert len(receiver.calls["down"]) == 3  # 1 + maxRetries
    outcomes = await io.read_json(io.topics.webhook_deliveries, lambda es: len(es) >= 8)
    by_endpoint: dict[str, list[str]] = defaultdict(list)
    for outcome in outcomes:
        by_endpoint[outcome["endpointId"]].append(outcome["outcome"])
    assert by_endpoint["flaky"] == ["failed", "failed", "delivered"]
    assert by_endpoint["down"] == ["failed", "failed", "exhausted"]
    assert by_endpoint["own"] == ["delivered", "delivered"]
    assert worker.stop() == 0


async def test_a_worker_killed_between_retries_loses_no_delivery(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any, receiver: Receiver
) -> None:
    receiver.scripts = {"later": [500]}
    settings = settings_factory(
        webhooks=[endpoint(receiver, "later", retryDelayMs=4_000, maxRetries=2)]
    )
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    await io.send(io.topics.send_results, "ow-2", send_recorded_factory("ow-2"))
    await io.send(io.topics.commands, "ow-2", update_status_factory(S.DELIVERED, "ow-2"))
    await receiver.wait("later", 1)
    await asyncio.sleep(0.5)  # the retry is on Kafka, due in ~3.5 s: kill the worker now
    worker.kill()
    worker = await worker_factory(settings).astart()
    await receiver.wait("later", 2, timeout=40)
    status, headers, body = receiver.calls["later"][1]
    assert status == 200 and headers["X-DeliveryTrack-Attempt"] == "2"
    assert orjson.loads(body)["id"] == "ow-2:2"
    assert worker.stop() == 0


async def test_retries_are_independent_and_hostile_inputs_become_dead_letters(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any, receiver: Receiver
) -> None:
    """A retry due in a day does not hold up one due in 300 ms behind it on the same partition;
    bad endpoints (refused by the fold), bad status changes and bad retry records are dead
    letters with their reasons and bytes; a restart neither loses the pending retry nor
    repeats the retries done after it."""
    receiver.scripts = {"far": [500], "quick": [500, 200, 500]}
    settings = settings_factory(
        webhooks=[
            endpoint(receiver, "far", events=["message.sent"], retryDelayMs=86_400_000),
            endpoint(
                receiver, "quick", events=["message.delivered", "message.clicked"], maxRetries=3
            ),
        ]
    )
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    topics = io.topics

    # Send results whose own endpoints the dispatcher could not use: refused by the fold.
    send = orjson.loads(encode(send_recorded_factory("hx")))
    hostile_endpoints = {
        "hx-delay": {"id": "a", "url": f"{receiver.base_url}/a", "retryDelayMs": 10**30},
        "hx-events": {"id": "a", "url": f"{receiver.base_url}/a", "events": ["message.sent"] * 99},
        "hx-idna": {"id": "a", "url": "http://a..b/hook"},
    }
    for message_id, hostile in hostile_endpoints.items():
        value = {**send, "eventId": f"{message_id}-send", "messageId": message_id}
        raw = json.dumps({**value, "webhooks": [hostile]}).encode()  # 10**30: not for orjson
        await io.send(topics.send_results, message_id, raw)

    # The first change of ow-3 fails at "far": its retry is due in a day.
    await io.send(topics.send_results, "ow-3", send_recorded_factory("ow-3"))
    await receiver.wait("far", 1)
    retries = await io.read(topics.webhook_retries, lambda ms: len(ms) >= 1)
    far = retries[0]
    assert orjson.loads(far.value)["deliveryId"] == "ow-3:1:far"

    # Hostile records straight on the dispatcher's inputs, behind that retry (same key, so the
    # same partition of the retry topic).
    bad_change = {
        **orjson.loads(encode(send_recorded_factory("ow-x"))),
        "status": "FAILED",  # no global endpoint wants it: only its own, invalid, one
        "changedAt": "2026-11-23T09:00:00Z",
        "record": {"webhooks": [{"id": "z", "url": "http://a..b/"}]},
    }
    hostile_changes = [b"{not json", orjson.dumps(bad_change)]
    for raw in hostile_changes:
        await io.send(topics.status_changes, "ow-3", raw)
    garbage_retry = b'{"deliveryId": "ow-3:1:far", "attempt": "soon"}'
    await io.send(topics.webhook_retries, "ow-3", garbage_retry)

    # ow-3 delivered: "quick" fails once, and its retry (due in 300 ms) is attempted long
    # before the one due in a day.
    await io.send(topics.commands, "ow-3", update_status_factory(S.DELIVERED, "ow-3"))
    await receiver.wait("quick", 2, timeout=20)
    assert len(receiver.calls["far"]) == 1
    _, headers, _ = receiver.calls["quick"][1]
    assert headers["X-DeliveryTrack-Attempt"] == "2"

    def reasons(letters: list[dict[str, Any]]) -> dict[str, list[tuple[str, bytes]]]:
        by_topic: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
        for letter in letters:
            value = base64.b64decode(letter["valueBase64"] or "")
            by_topic[letter["topic"]].append((letter["reason"], value))
        return by_topic

    def complete(letters: list[dict[str, Any]]) -> bool:
        seen = reasons(letters)
        return (
            len(seen[topics.send_results]) >= 3
            and len(seen[topics.status_changes]) >= 2
            and len(seen[topics.webhook_retries]) >= 1
        )

    letters = reasons(await io.read_json(topics.dead_letters, complete))
    assert {r for r, _ in letters[topics.send_results]} == {"schema-invalid"}
    assert sorted(letters[topics.status_changes]) == sorted(
        [("malformed-json", hostile_changes[0]), ("invalid-webhook-endpoint", hostile_changes[1])]
    )
    assert letters[topics.webhook_retries] == [("invalid-retry", garbage_retry)]
    assert not any(receiver.calls[path] for path in ("a", "z"))
    assert worker.stop() == 0

    # The retry group committed up to the pending retry, no further; what was done after it
    # is in the commit's metadata.
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(f"{settings.app_id}.webhook-retries")
    finally:
        await admin.close()
    committed = offsets[TopicPartition(far.topic, far.partition)]
    assert committed.offset == far.offset and committed.metadata.startswith("dt1:")

    # Restarted: the pending retry is still pending, and neither the garbage nor the quick
    # retry done before the restart is handled again; new retries flow.
    worker = await worker_factory(settings).astart()
    await io.send(topics.commands, "ow-3", update_status_factory(S.CLICKED, "ow-3"))
    await receiver.wait("quick", 4, timeout=30)
    attempts = [
        (h["X-DeliveryTrack-Delivery"], h["X-DeliveryTrack-Attempt"])
        for _, h, _ in receiver.calls["quick"]
    ]
    assert attempts == [
        ("ow-3:2:quick", "1"),
        ("ow-3:2:quick", "2"),
        ("ow-3:3:quick", "1"),
        ("ow-3:3:quick", "2"),
    ]
    await asyncio.sleep(1)
    assert len(receiver.calls["far"]) == 1 and len(receiver.calls["quick"]) == 4
    letters = reasons(await io.read_json(topics.dead_letters, complete))
    assert len(letters[topics.webhook_retries]) == 1  # the garbage was not read again
    assert worker.stop() == 0


async def test_outbound_targets_follow_the_ssrf_rules_and_secrets_stay_out_of_topics(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any, receiver: Receiver
) -> None:
    """Against the real worker: a loopback target is refused (visible on webhook-deliveries)
    and gets nothing, the same receiver on the allow-list (by name) is called and signed, with
    its secretRef's header set; a redirect is not followed; a metadata address is refused;
    literal headers never reach a record, a status change, a retry or a dead letter."""
    local = f"http://localhost:{receiver.port}"
    receiver.redirects = {"moved": f"{local}/elsewhere"}
    receiver.scripts = {"flaky": [503]}
    token, literal = "Bearer header-secret-1234", "Bearer literal-secret-5678"
    settings = settings_factory(
        webhook_allowed_hosts=("localhost",),
        webhook_secrets={"acme": SECRET},
        webhook_headers={"acme": {"Authorization": token}},
        webhook_secret_hosts={"acme": ("localhost",)},
    )
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    own = [
        {"id": "loop", "url": f"{receiver.base_url}/loop"},
        {"id": "signed", "url": f"{local}/signed", "secretRef": "acme"},
        {"id": "flaky", "url": f"{local}/flaky", "secretRef": "acme", "retryDelayMs": 200},
        {"id": "moved", "url": f"{local}/moved", "maxRetries": 0},
        {"id": "metadata", "url": "http://169.254.169.254/latest/meta-data/"},
        {"id": "literal", "url": f"{local}/literal", "headers": {"Authorization": literal}},
        {"id": "stolen", "url": f"{receiver.base_url}/stolen", "secretRef": "acme"},
    ]
    raw = orjson.loads(encode(send_recorded_factory("ssrf-1")))
    await io.send(io.topics.send_results, "ssrf-1", orjson.dumps({**raw, "webhooks": own}))

    outcomes = await io.read_json(io.topics.webhook_deliveries, lambda es: len(es) >= 8)
    by_endpoint: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for outcome in outcomes:
        by_endpoint[outcome["endpointId"]].append(outcome)
    loop, metadata = by_endpoint["loop"][0], by_endpoint["metadata"][0]
    assert loop["outcome"] == "refused" and loop["error"].startswith("127.0.0.1 is loopback")
    assert metadata["outcome"] == "refused" and "metadata" in metadata["error"]
    (literal_outcome,) = by_endpoint["literal"]
    assert literal_outcome["outcome"] == "refused" and "headers" in literal_outcome["error"]
    (stolen,) = by_endpoint["stolen"]
    assert stolen["outcome"] == "refused" and "secretRef 'acme'" in stolen["error"]
    assert [o["outcome"] for o in by_endpoint["signed"]] == ["delivered"]
    assert [o["outcome"] for o in by_endpoint["flaky"]] == ["failed", "delivered"]
    (moved,) = by_endpoint["moved"]
    assert moved["outcome"] == "exhausted" and moved["httpStatus"] == 302
    assert "redirects are not followed" in moved["error"]
    for path in ("loop", "literal", "stolen", "elsewhere"):
        assert receiver.calls[path] == [], path
    _, headers, body = receiver.calls["signed"][0]
    assert headers[SIGNATURE_HEADER] == sign(SECRET, int(headers[TIMESTAMP_HEADER]), body)
    assert headers["Authorization"] == token

    # The record shows the endpoint without its headers; no topic holds a secret.
    record = await worker.arecord("ssrf-1")
    (kept,) = [w for w in record["webhooks"] if w["id"] == "literal"]
    assert kept["headersDropped"] is True and "headers" not in kept
    for topic in (
        io.topics.status_changes,
        io.topics.webhook_deliveries,
        io.topics.webhook_retries,
        io.topics.dead_letters,
    ):
        for message in await io.read(topic, lambda ms: True, timeout=10):
            for secret in (token, literal, SECRET):
                assert secret.encode() not in (message.value or b""), topic
    status, health = await worker.aget("/health")
    assert status == 200 and health["webhooksRefused"] == 4
    assert worker.stop() == 0
