"""GET /metrics on a real worker: counter values after known traffic, lag back to 0 after a
backlog is folded (real broker, simulated provider)."""

from __future__ import annotations

import asyncio
import math
import time
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deliverytrack.streams.kafka.topic_admin import ensure_topics
from deliverytrack.streams.metrics import CONTENT_TYPE
from tests.integration.conftest import WorkerProcess
from tests.integration.support import FAST_POLLING, Provider, send
from tests.integration.test_webhooks import signed

pytestmark = pytest.mark.integration

BACKLOG = 120
SECRET = "whsec-metrics-1"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(worker: WorkerProcess, token: str | None) -> tuple[int, str, str]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    request = urllib.request.Request(worker.base_url + "/metrics", headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


async def until(worker: WorkerProcess, ready: Any, timeout: float = 30.0) -> Samples:
    """Scrape until ``ready(samples)`` holds (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, text = await asyncio.to_thread(scrape, worker, worker.token)
        assert status == 200, text
        found = samples(text)
        if ready(found):
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"metrics not as expected after {timeout}s:\n{text}")
        await asyncio.sleep(0.3)


async def test_metrics_after_traffic_hold_the_counts_and_lag_returns_to_zero(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any, provider: Provider
) -> None:
    settings = settings_factory(
        polling=FAST_POLLING,
        providers={
            "sim": {"kind": "simulated", "baseUrl": provider.base_url},
            "hooked": {"kind": "none", "webhookSecret": SECRET},
        },
    )
    io = await kafka_io_factory(settings)
    await ensure_topics(settings, io.topics, timeout=20)  # with the worker's partition count
    send_results = io.topics.send_results
    # A backlog before the worker starts: sends, two undecodable inputs, one with a wrong key.
    for n in range(BACKLOG):
        event = send(f"m-{n}", f"pm-{n}", provider_id="hooked")
        await io.send(send_results, event.message_id, event)
    await io.send(send_results, "bad-1", b"not json")
    await io.send(send_results, "bad-2", b"{}")
    wrong = send("m-wrong", "pm-wrong", provider_id="hooked")
    await io.send(send_results, "someone-else", wrong)

    worker = await worker_factory(settings).astart()
    status, _, _ = await asyncio.to_thread(scrape, worker, None)
    assert status == 401  # behind the API token, like every route but /health

    inputs = BACKLOG + 3

    def backlog_folded(found: Samples) -> bool:
        lags = [
            v
            for (name, labels), v in found.items()
            if name == "deliverytrack_consumer_lag" and ("topic", send_results) in labels
        ]
        return (
            value(found, "deliverytrack_fold_inputs_total", topic=send_results) == inputs
            and len(lags) == settings.partitions
            and not any(lags)
        )

    found = await until(worker, backlog_folded)
    assert value(found, "deliverytrack_assigned_partitions") == settings.partitions
    assert value(found, "deliverytrack_records", status="SENT") == BACKLOG
    assert value(found, "deliverytrack_status_changes_total", status="SENT") == BACKLOG
    refused = {
        dict(labels)["reason"]: v
        for (name, labels), v in found.items()
        if name == "deliverytrack_fold_inputs_refused_total"
    }
    assert sum(refused.values()) == 3 and refused["wrong-key"] == 1, refused
    letters = {
        dict(labels)["reason"]: v
        for (name, labels), v in found.items()
        if name == "deliverytrack_dead_letters_total" and ("topic", send_results) in labels
    }
    assert letters == refused
    # Every input of every topic (links, due checks, observations too) is in some batch.
    every_input = sum(
        v for (name, _), v in found.items() if name == "deliverytrack_fold_inputs_total"
    )
    assert value(found, "deliverytrack_fold_batch_inputs_sum") == every_input >= inputs
    assert (value(found, "deliverytrack_fold_batch_duration_seconds_count") or 0) >= 1
    assert all(
        v > 0 for (name, _), v in found.items() if name == "deliverytrack_rocksdb_size_bytes"
    )

    # The ordering watermark of every assigned partition, once the backlog is folded: behind
    # now by the ordering margin plus the time since the last fetch, nothing waiting for it.
    partitions = [str(p) for p in range(settings.partitions)]
    margin_s = settings.ordering_margin_ms / 1000

    def ordering(found: Samples, name: str) -> dict[str, float]:
        return {dict(labels)["partition"]: v for (n, labels), v in found.items() if n == name}

    def watermarks_caught_up(found: Samples) -> bool:
        delays = ordering(found, "deliverytrack_ordering_watermark_delay_seconds")
        waiting = ordering(found, "deliverytrack_ordering_buffered_inputs")
        return (
            sorted(delays) == partitions
            and all(margin_s <= d < 5 for d in delays.values())
            and waiting == dict.fromkeys(partitions, 0)
        )

    found = await until(worker, watermarks_caught_up)
    delays = ordering(found, "deliverytrack_ordering_watermark_delay_seconds")
    assert all(math.isfinite(d) and margin_s <= d < 5 for d in delays.values()), delays

    # Webhooks in: one accepted (it delivers m-0), one unsigned, one to an unknown provider.
    body = b'{"providerMessageId": "pm-0", "status": "DELIVERED"}'
    async with aiohttp.ClientSession() as session:
        for url, headers, expected in (
            (f"{worker.webhook_url}/webhooks/hooked", signed(body, SECRET), 200),
            (f"{worker.webhook_url}/webhooks/hooked", {"Content-Type": "application/json"}, 401),
            (f"{worker.webhook_url}/webhooks/nobody-{time.time_ns()}", signed(body, SECRET), 404),
        ):
            async with session.post(url, data=body, headers=headers) as response:
                assert response.status == expected, await response.text()

    # A polled message: the simulated provider answers DELIVERED on the first call.
    pmid = await provider.accept(outcome="DELIVERED", delayMs=0)
    polled = send("m-polled", pmid)
    await io.send(send_results, polled.message_id, polled)
    await io.send(io.topics.commands, b"m-polled", b"[]")  # one refusal on another topic

    found = await until(
        worker,
        lambda f: (
            value(f, "deliverytrack_status_changes_total", status="DELIVERED") == 2
            # The records are written after their status changes are published.
            and value(f, "deliverytrack_records", status="DELIVERED") == 2
            and value(f, "deliverytrack_fold_inputs_total", topic=io.topics.commands) == 1
            and (
                value(f, "deliverytrack_provider_calls_total", provider="sim", outcome="result")
                or 0
            )
            >= 1
        ),
    )
    assert value(found, "deliverytrack_records", status="DELIVERED") == 2
    assert value(found, "deliverytrack_records", status="SENT") == BACKLOG - 1
    webhooks = {
        (dict(labels)["provider"], dict(labels)["outcome"]): v
        for (name, labels), v in found.items()
        if name == "deliverytrack_webhook_requests_total"
    }
    assert webhooks == {
        ("hooked", "accepted"): 1,
        ("hooked", "unauthorized"): 1,
        ("unknown", "unknown_provider"): 1,
    }
    calls = value(found, "deliverytrack_provider_calls_total", provider="sim", outcome="result")
    count = value(found, "deliverytrack_provider_call_duration_seconds_count", provider="sim")
    assert calls == count
    refused_commands = sum(
        v
        for (name, labels), v in found.items()
        if name == "deliverytrack_fold_inputs_refused_total"
        and ("topic", io.topics.commands) in labels
    )
    assert refused_commands == 1
    assert value(found, "deliverytrack_outbound_webhook_attempts_total", outcome="delivered") == 0
    status, content_type, _ = await asyncio.to_thread(scrape, worker, worker.token)
    assert status == 200 and content_type == CONTENT_TYPE
    assert worker.stop() == 0
