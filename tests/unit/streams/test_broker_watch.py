"""The broker watch and what /health and the queries say with it (the worker's real views on
aiohttp's test server): 200 "ok" while Kafka answers and during the grace period, then 503
"broker unreachable" with since-when, query answers marked stale, and 200 again once Kafka
answers. The end-to-end version, with a broker stopped under a worker, is
tests/integration/test_broker_outage.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.errors import KafkaConnectionError, KafkaError

from deliverytrack.models.settings import Settings
from deliverytrack.streams.state.store import PartitionStore
from deliverytrack.streams.worker.app import DeliveryTrackApp, create_app
from deliverytrack.streams.worker.broker_watch import BrokerWatch

NOW = 1_796_461_200.25  # 2026-12-05T09:00:00.250000Z


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


async def failing() -> None:
    raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]")


async def answering() -> None:
    return None


async def test_unreachable_only_after_the_grace_period_and_since_the_first_failure() -> None:
    clock = Clock()
    watch = BrokerWatch(grace_s=10, clock=clock)
    assert await watch.check(answering)
    assert not watch.unreachable and watch.describe()["reachable"] is True
    assert not await watch.check(failing)
    clock.now += 9.9
    assert not await watch.check(failing)
    assert not watch.unreachable  # a blip shorter than the grace period
    clock.now += 0.1
    assert watch.unreachable
    assert watch.since_text() == "2026-12-05T09:00:00.250000Z"
    assert watch.describe() == {
        "reachable": False,
        "unreachableSince": "2026-12-05T09:00:00.250000Z",
        "lastError": "KafkaConnectionError: Unable to bootstrap from [('127.0.0.1', 9092)]",
    }
    assert await watch.check(answering)
    assert not watch.unreachable and watch.since_text() is None


async def test_a_broker_that_never_answers_is_unreachable_too() -> None:
    watch = BrokerWatch(grace_s=0, timeout_s=0.05)

    async def hanging() -> None:
        await asyncio.sleep(10)

    assert not await watch.check(hanging)
    assert watch.unreachable and watch.last_error == "TimeoutError"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[DeliveryTrackApp, TestClient[Any, Any]]]:
    app = create_app(Settings(data_dir=tmp_path / "data", partitions=1))
    app.engine.partitions.attach(0, PartitionStore(tmp_path / "p0.db"), ready=True)
    app.engine.ready.set()
    async with TestClient(TestServer(app.web.web_app)) as client:  # type: ignore[attr-defined]
        yield app, client
    app.engine.store(0).close()


async def test_health_and_queries_while_the_broker_is_away(
    served: tuple[DeliveryTrackApp, TestClient[Any, Any]],
) -> None:
    app, client = served
    clock = Clock()
    watch = app.broker_watch
    watch.clock, watch.grace_s = clock, 10

    async def get(path: str) -> tuple[int, Any, Any]:
        async with client.get(path) as response:
            return response.status, await response.json(), response.headers

    status, body, _ = await get("/health")
    assert (status, body["status"], body["broker"]["reachable"]) == (200, "ok", True)

    watch.failed(KafkaError("Unable to get cluster metadata over all known brokers"))
    clock.now += 5
    status, body, headers = await get("/health")
    assert (status, body["status"]) == (200, "ok")  # within the grace period
    assert body["broker"]["unreachableSince"] == "2026-12-05T09:00:00.250000Z"
    assert "X-DeliveryTrack-Stale" not in headers

    clock.now += 5
    status, body, headers = await get("/health")
    assert status == 503
    assert body["status"] == "broker unreachable"
    assert body["since"] == "2026-12-05T09:00:00.250000Z"
    assert body["broker"]["lastError"].startswith("KafkaError")
    status, body, headers = await get("/records/count")
    assert (status, body) == (200, {"count": 0})
    stale = headers["X-DeliveryTrack-Stale"]
    assert stale == "broker unreachable since 2026-12-05T09:00:00.250000Z"

    watch.ok()
    status, body, headers = await get("/health")
    assert (status, body["status"]) == (200, "ok")
    assert "X-DeliveryTrack-Stale" not in headers


async def test_a_failed_component_comes_before_the_broker(
    served: tuple[DeliveryTrackApp, TestClient[Any, Any]],
) -> None:
    app, client = served
    app.broker_watch.grace_s = 0
    app.broker_watch.failed(KafkaError("gone"))
    app.engine.failure.error = RuntimeError("rocksdb write failed")
    try:
        async with client.get("/health") as response:
            assert response.status == 503
            assert (await response.json())["status"] == "fold failed"
    finally:
        app.engine.failure.error = None
