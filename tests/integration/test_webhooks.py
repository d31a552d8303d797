"""Provider webhooks in: signed ingress, correlation in any order, nothing lost (real broker)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from typing import Any

import aiohttp
import orjson

from deliverytrack.streams.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.integration.support import send

SECRET = "whsec-test-1"
PROVIDER = "gen"


def webhook_settings(settings_factory: Any, **overrides: Any) -> Any:
    return settings_factory(
        providers={PROVIDER: {"kind": "none", "webhookSecret": SECRET}},
        # Nothing is polled here: reports alone move the records.
        polling={"initialDelayMs": 3_600_000, "intervalMs": 200},
        **overrides,
    )


def signed(body: bytes, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    timestamp = int(time.time() if at is None else at)
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        "Content-Type": "application/json",
    }


def report(pmid: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"providerMessageId": pmid, "status": status, **extra}


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    async with session.post(url, data=body, headers=headers) as response:
        return response.status, await response.json()


async def test_reports_in_any_order_before_or_after_their_send_end_right_and_lose_nothing(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any
) -> None:
    settings = webhook_settings(settings_factory, webhook_hold_ms=12_000)
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    rng = random.Random(7)
    ids = [f"wh-{i}" for i in range(300)]
    pmid = {mid: f"pm-{mid}" for mid in ids}
    # Per message: the final report and an earlier one, posted in random order, plus a retry.
    plans = {
        0: [("DELIVERED", "4000"), ("CLICKED", "CLK")],
        1: [("FAILED", "3059"), ("SENDING", "2000")],
        2: [("DELIVERED", "4000"), ("SENT", "3000")],
    }
    bodies: list[bytes] = []
    for i, mid in enumerate(ids):
        for status, code in plans[i % 3]:
            body = orjson.dumps(report(pmid[mid], status, statusCode=code, statusMessage=status))
            bodies.append(body)
            if i % 2 == 0:
                bodies.append(body)  # the provider retried: a duplicate
    ghosts = [orjson.dumps(report(f"ghost-{k}", "DELIVERED")) for k in range(100)]
    bodies.extend(ghosts)
    rng.shuffle(bodies)
    assert len(bodies) == 1_000

    late = set(ids[::3])  # a third of the send results arrive after their reports
    for mid in ids:
        if mid not in late:
            await io.send(io.topics.send_results, mid, send(mid, pmid[mid], provider_id=PROVIDER))
    url = f"{worker.webhook_url}/webhooks/{PROVIDER}"
    async with aiohttp.ClientSession() as session:
        semaphore = asyncio.Semaphore(64)

        async def deliver(body: bytes) -> tuple[int, Any]:
            async with semaphore:
                return await post(session, url, body, signed(body))

        answers = await asyncio.gather(*(deliver(body) for body in bodies))
    assert Counter(status for status, _ in answers) == {200: 1_000}
    for mid in sorted(late):
        await io.send(io.topics.send_results, mid, send(mid, pmid[mid], provider_id=PROVIDER))

    expected_final = {0: "CLICKED", 1: "FAILED", 2: "DELIVERED"}
    for i, mid in enumerate(ids):
        record = await worker.arecord(mid, lambda r, i=i: r["status"] == expected_final[i % 3], 60)
        assert record["providerStatusCode"] in {"4000", "CLK", "3059"}

    changes = await io.read_json(
        io.topics.status_changes, lambda events: len(events) >= len(ids) * 2, timeout=30
    )
    by_message: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in changes:
        by_message[event["messageId"]].append(event)
    for i, mid in enumerate(ids):
        events = by_message[mid]
        record = await worker.arecord(mid)
        # Exactly one status-change event per applied transition, numbered without gaps.
        assert [e["sequence"] for e in events] == list(range(1, record["sequence"] + 1)), mid
        assert len({e["eventId"] for e in events}) == len(events)
        assert [e["status"] for e in events] == [h["status"] for h in record["statusHistory"]]
        assert all(e["source"] == "webhook" for e in events[1:])
        assert events[-1]["status"] == expected_final[i % 3]
        if i % 3 != 0:
            assert len(events) == 2  # SENT, then the one real transition; the rest refused

    # Reports nobody sent: dead-lettered once each after the holding time, with their bytes.
    letters = await io.read_json(
        io.topics.dead_letters,
        lambda events: sum(e["reason"] == "unmatched-report" for e in events) >= 100,
        timeout=40,
    )
    unmatched = [e for e in letters if e["reason"] == "unmatched-report"]
    assert sorted(orjson.loads(e["valueText"])["providerMessageId"] for e in unmatched) == sorted(
        f"ghost-{k}" for k in range(100)
    )
    assert all(e["topic"] == io.topics.provider_webhooks for e in unmatched)
    assert [e for e in letters if e["reason"] != "unmatched-report"] == []
    _, health = await worker.aget("/health")
    assert health["webhooksAccepted"] == 1_000
    assert health["reportsCorrelated"] == 600  # each distinct matched report once
    assert worker.stop() == 0


async def test_unsigned_forged_stale_and_malformed_requests_are_refused_and_publish_nothing(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any
) -> None:
    settings = webhook_settings(settings_factory)
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    url = f"{worker.webhook_url}/webhooks/{PROVIDER}"
    good = orjson.dumps(report("pm-x", "DELIVERED"))
    cases = [
        ("unsigned", good, {"Content-Type": "application/json"}, 401, "unsigned"),
        ("forged", good, signed(good, secret="not-the-secret"), 401, "forged"),
        ("tampered", good + b" ", {**signed(good)}, 401, "forged"),
        ("stale", good, signed(good, at=time.time() - 3_600), 401, "stale"),
        ("future", good, signed(good, at=time.time() + 3_600), 401, "stale"),
        ("not json", b"{nope", signed(b"{nope"), 400, "malformed JSON"),
        (
            "bad status",
            b'{"providerMessageId":"p","status":"LOST"}',
            signed(b'{"providerMessageId":"p","status":"LOST"}'),
            400,
            "status",
        ),
        ("no id", b'[{"status":"SENT"}]', signed(b'[{"status":"SENT"}]'), 400, "providerMessageId"),
        ("empty batch", b'{"reports":[]}', signed(b'{"reports":[]}'), 400, "no reports"),
    ]
    async with aiohttp.ClientSession() as session:
        for name, body, headers, want_status, want_reason in cases:
            status, answer = await post(session, url, body, headers)
            assert status == want_status, (name, answer)
            assert want_reason in answer["error"], (name, answer)
        status, answer = await post(
            session, f"{worker.webhook_url}/webhooks/nobody", good, signed(good)
        )
        assert status == 404 and "nobody" in answer["error"]
        # A good request afterwards goes through, and is the only thing on the topic.
        status, answer = await post(session, url, good, signed(good))
        assert status == 200 and answer["accepted"] == 1
    published = await io.read(io.topics.provider_webhooks, lambda ms: len(ms) >= 1, timeout=10)
    await asyncio.sleep(0.5)
    published = await io.read(io.topics.provider_webhooks, lambda ms: True, timeout=10)
    assert len(published) == 1
    assert published[0].key == f"{PROVIDER}:pm-x".encode()
    assert orjson.loads(published[0].value)["eventId"] == answer["eventIds"][0]
    _, health = await worker.aget("/health")
    assert health["webhooksRejected"] == len(cases) + 1
    assert worker.stop() == 0


async def test_a_late_report_resolves_a_timed_out_record_and_a_batch_is_one_request(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any
) -> None:
    settings = settings_factory(
        providers={PROVIDER: {"kind": "none", "webhookSecret": SECRET}},
        polling={
            "initialDelayMs": 200,
            "intervalMs": 100,
            "unsupportedProviderStrategy": "unknown",
        },
    )
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    await io.send(
        io.topics.send_results, "late-1", send("late-1", "pm-late-1", provider_id=PROVIDER)
    )
    await io.send(
        io.topics.send_results, "late-2", send("late-2", "pm-late-2", provider_id=PROVIDER)
    )
    for mid in ("late-1", "late-2"):
        record = await worker.arecord(mid, lambda r: r["status"] == "UNKNOWN")
        assert record["lastError"]["code"] == "UNSUPPORTED_PROVIDER"
    body = orjson.dumps(
        {
            "reports": [
                report("pm-late-1", "DELIVERED", deliveredAt="2026-11-24T10:00:00Z"),
                report("pm-late-2", "FAILED", statusCode="3059", failedAt="2026-11-24T10:00:01Z"),
            ]
        }
    )
    async with aiohttp.ClientSession() as session:
        status, answer = await post(
            session, f"{worker.webhook_url}/webhooks/{PROVIDER}", body, signed(body)
        )
    assert status == 200 and answer["accepted"] == 2
    delivered = await worker.arecord("late-1", lambda r: r["status"] == "DELIVERED")
    assert delivered["deliveredAt"] == "2026-11-24T10:00:00Z"
    assert delivered["statusUpdatedAt"] == "2026-11-24T10:00:00Z"
    assert "lastError" not in delivered
    failed = await worker.arecord("late-2", lambda r: r["status"] == "FAILED")
    assert failed["providerStatusCode"] == "3059"
    assert worker.stop() == 0
