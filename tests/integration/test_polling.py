"""Polling end to end on a real broker and a real (simulated) provider over HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deliverytrack.models.enums import MessageType
from deliverytrack.models.events import PollRequested
from tests.integration.conftest import free_port
from tests.integration.support import Provider, polling_settings, send

pytestmark = pytest.mark.integration


async def test_sent_record_is_polled_with_backoff_until_delivered(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any, provider: Provider
) -> None:
    settings = polling_settings(settings_factory, provider)
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    pmid = await provider.accept(outcome="DELIVERED", delayMs=1_500)
    event = send("p-delivered", pmid)
    await io.send(io.topics.send_results, event.message_id, event)

    record = await worker.arecord("p-delivered", lambda r: r["status"] == "DELIVERED", 20)
    assert record["providerStatusCode"] == "4000"
    assert record["deliveredAt"] is not None
    assert "nextCheckAt" not in record  # out of the due index
    calls = await provider.calls(pmid)
    assert len(calls) == record["attemptCount"] >= 2
    # First poll after initialDelay; then the gaps follow the backoff table (plus a tick).
    assert calls[0] >= event.requested_at + timedelta(milliseconds=300)
    gaps = [(b - a) / timedelta(milliseconds=1) for a, b in zip(calls, calls[1:], strict=False)]
    for gap, backoff in zip(gaps, [400, 800, 1200, 1200, 1200], strict=False):
        assert backoff <= gap < backoff + 1_000, gaps
    history = [h["status"] for h in record["statusHistory"]]
    assert history == ["SENT", "DELIVERED"]
    assert record["statusHistory"][-1]["source"] == "provider"

    # Never polled again.
    await asyncio.sleep(2.0)
    assert len(await provider.calls(pmid)) == len(calls)
    assert worker.stop() == 0


async def test_each_outcome_ends_as_k_msg_says(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any, provider: Provider
) -> None:
    settings = polling_settings(settings_factory, provider, maxTrackingDurationMs=2_500)
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    cases = {
        "o-fatal": send("o-fatal", await provider.accept(outcome="ERROR_FATAL")),
        "o-retry": send("o-retry", await provider.accept(outcome="ERROR_RETRYABLE")),
        "o-failed": send("o-failed", await provider.accept(outcome="FAILED", delayMs=0)),
        "o-timeout": send("o-timeout", await provider.accept(outcome="PENDING")),
        "o-notfound": send("o-notfound", "pm-x", provider_id="ghost"),
        "o-unsupported": send("o-unsupported", "pm-y", provider_id="legacy"),
    }
    for event in cases.values():
        await io.send(io.topics.send_results, event.message_id, event)

    fatal = await worker.arecord("o-fatal", lambda r: r["status"] == "UNKNOWN")
    assert fatal["lastError"]["code"] == "AUTHENTICATION_FAILED"
    failed = await worker.arecord("o-failed", lambda r: r["status"] == "FAILED")
    assert failed["providerStatusCode"] == "3104" and failed["failedAt"] is not None
    notfound = await worker.arecord("o-notfound", lambda r: r["status"] == "UNKNOWN")
    assert notfound["lastError"] == {
        "code": "PROVIDER_NOT_FOUND",
        "message": "Provider not found: ghost",
    }
    # Retryable errors and "skip" keep polling with backoff until the tracking timeout.
    retry = await worker.arecord("o-retry", lambda r: r["attemptCount"] >= 2)
    assert retry["status"] == "SENT"
    assert retry["lastError"]["code"] == "NETWORK_SERVICE_UNAVAILABLE"
    unsupported = await worker.arecord("o-unsupported", lambda r: r["attemptCount"] >= 2)
    assert unsupported["status"] == "SENT"
    assert unsupported["lastError"]["code"] == "UNSUPPORTED_PROVIDER"
    for message_id in ("o-timeout", "o-retry", "o-unsupported"):
        ended = await worker.arecord(message_id, lambda r: r["status"] == "UNKNOWN", 20)
        assert ended["lastError"]["code"] == "TRACKING_TIMEOUT"
    assert worker.stop() == 0


async def test_unsupported_provider_with_unknown_strategy(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any, provider: Provider
) -> None:
    settings = polling_settings(settings_factory, provider, unsupportedProviderStrategy="unknown")
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    event = send("u-unknown", "pm-1", provider_id="legacy")
    await io.send(io.topics.send_results, event.message_id, event)
    record = await worker.arecord("u-unknown", lambda r: r["status"] == "UNKNOWN")
    assert record["lastError"]["code"] == "UNSUPPORTED_PROVIDER"
    assert record["attemptCount"] == 1
    assert worker.stop() == 0


async def test_ticks_during_a_slow_provider_call_do_not_poll_twice(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any, provider: Provider
) -> None:
    # Each status call takes 1.5 s; the timer ticks every 100 ms, so ~15 ticks per call.
    provider.server.update_config({"latency_ms": 1_500})
    settings = polling_settings(settings_factory, provider, backoffMs=[2_000])
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    ids = {f"slow-{i}": await provider.accept(outcome="PENDING") for i in range(5)}
    for message_id, pmid in ids.items():
        await io.send(io.topics.send_results, message_id, send(message_id, pmid))
    await asyncio.sleep(6.0)
    for message_id, pmid in ids.items():
        record = await worker.arecord(message_id)
        calls = await provider.calls(pmid)
        in_flight = 1 if record.get("checkLeaseUntil") else 0
        # One request per due time: every call is either answered (an attempt) or in flight.
        assert len(calls) == record["attemptCount"] + in_flight, (calls, record)
        assert record["checkSeq"] == len(calls)
        assert 2 <= len(calls) <= 3
    _, health = await worker.aget("/health")
    # ~60 timer ticks happened; a leased record is out of the due index until its lease ends.
    assert health["dueScans"] >= 30
    assert (
        health["dueChecks"]
        == health["pollRequests"]
        == sum([len(await provider.calls(pmid)) for pmid in ids.values()])
    )
    assert worker.stop() == 0


async def test_two_workers_share_partitions_and_poll_each_record_once_per_due_time(
    settings_factory: Any,
    worker_factory: Any,
    kafka_io_factory: Any,
    provider: Provider,
    tmp_path: Any,
) -> None:
    settings_a = polling_settings(settings_factory, provider, backoffMs=[500])
    settings_b = settings_a.model_copy(
        update={
            "data_dir": tmp_path / "data-b",
            "web_port": free_port(),
            "webhook_port": free_port(),
        }
    )
    first, second = worker_factory(settings_a), worker_factory(settings_b)
    await asyncio.gather(first.astart(), second.astart())
    io = await kafka_io_factory(settings_a)
    ids = {
        f"share-{i}": await provider.accept(outcome="DELIVERED", delayMs=1_200) for i in range(60)
    }
    for message_id, pmid in ids.items():
        await io.send(io.topics.send_results, message_id, send(message_id, pmid))

    # Wait for a stable split: both workers own partitions, disjointly.
    for _ in range(100):
        _, health_a = await first.aget("/health")
        _, health_b = await second.aget("/health")
        owned_a = set(health_a["assignedPartitions"])
        owned_b = set(health_b["assignedPartitions"])
        if owned_a and owned_b and not owned_a & owned_b and len(owned_a | owned_b) == 4:
            break
        await asyncio.sleep(0.2)
    assert owned_a and owned_b and not owned_a & owned_b

    total_attempts = 0
    for message_id, pmid in ids.items():
        # Both workers answer (the query API routes to the owner) with the same record.
        record = await first.arecord(message_id, lambda r: r["status"] == "DELIVERED", 20)
        assert await second.arecord(message_id, lambda r: r["status"] == "DELIVERED", 20) == record
        assert len(await provider.calls(pmid)) == record["attemptCount"]
        total_attempts += record["attemptCount"]
    _, health_a = await first.aget("/health")
    _, health_b = await second.aget("/health")
    assert health_a["providerCalls"] > 0 and health_b["providerCalls"] > 0
    assert health_a["providerCalls"] + health_b["providerCalls"] == total_attempts
    assert first.stop() == 0 and second.stop() == 0


async def test_bad_and_stale_poll_requests_are_dropped_and_polling_goes_on(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any, provider: Provider
) -> None:
    settings = polling_settings(settings_factory, provider)
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    stale_pmid = await provider.accept(outcome="DELIVERED", delayMs=0)
    # Straight onto the internal topic: garbage, and a request whose lease ended long ago
    # (what a poller finds when it starts on a backlog): neither reaches the provider.
    await io.send(io.topics.poll_requests, "p-garbage", b"{not json")
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    stale = PollRequested(
        event_id="p-stale:due:1",
        message_id="p-stale",
        check_seq=1,
        provider_id="sim",
        provider_message_id=stale_pmid,
        type=MessageType.SMS,
        to="01012345678",
        requested_at=long_ago,
        due_at=long_ago,
        issued_at=long_ago,
    )
    await io.send(io.topics.poll_requests, "p-stale", stale)
    # A real record after them is polled as usual.
    pmid = await provider.accept(outcome="DELIVERED", delayMs=0)
    await io.send(io.topics.send_results, "p-after", send("p-after", pmid))
    await worker.arecord("p-after", lambda r: r["status"] == "DELIVERED", 20)
    for _ in range(50):  # the stale request may sit on another partition than p-after's
        _, health = await worker.aget("/health")
        if health["pollRequestsSkippedExpired"]:
            break
        await asyncio.sleep(0.2)
    assert health["pollRequestsSkippedExpired"] == 1
    assert await provider.calls(stale_pmid) == []
    assert health["providerCalls"] == len(await provider.calls(pmid)) >= 1
    assert worker.stop() == 0
