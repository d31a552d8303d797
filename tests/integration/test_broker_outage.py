"""A worker whose Kafka goes away (issue 15, "the worker while Kafka is away").

On a broker of the test's own (the session broker is shared), started on a temp dir with fixed
ports so that it comes back on the same address:

- a clean start on a fresh cluster logs no ERROR (the group coordinator lookup that fails
  while the coordinator is elected is expected start-up noise);
- with the broker stopped, /health answers 503 "broker unreachable" with since-when once the
  grace period has passed (200 before it), and query answers say they are stale; with the
  broker back, /health is 200 "ok" again;
- the log says so in a few lines (one per interval), not ~400 ERROR lines a second;
- SIGTERM stops the worker within its shutdown timeout whatever the broker does (it took ~60 s).
"""

from __future__ import annotations

import asyncio
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from deliverytrack.models.codec import encode
from deliverytrack.models.settings import Settings
from deliverytrack.streams.dev.kafka_broker import KafkaBroker
from deliverytrack.streams.topics import Topics
from tests.factories import send_recorded_factory
from tests.integration.conftest import WorkerProcess, free_port

pytestmark = pytest.mark.integration

GRACE_MS = 4_000
SHUTDOWN_MS = 3_000
REPEAT_MS = 10_000
OUTAGE_S = 25.0


def _settings(broker: KafkaBroker, tmp_path: Path) -> Settings:
    return Settings(
        broker=broker.url,
        app_id="outage",
        topic_prefix="outage.",
        data_dir=tmp_path / "data",
        web_port=free_port(),
        webhook_port=free_port(),
        api_tokens=(secrets.token_urlsafe(24),),
        partitions=2,
        consumer_session_timeout_ms=6_000,
        consumer_heartbeat_interval_ms=500,
        fold_batch_timeout_ms=20,
        producer_linger_ms=5,
        polling={"intervalMs": 3_600_000},
        broker_unreachable_grace_ms=GRACE_MS,
        shutdown_timeout_ms=SHUTDOWN_MS,
        log_repeat_interval_ms=REPEAT_MS,
    )


def _get(worker: WorkerProcess, path: str) -> tuple[int, Any, dict[str, str]]:
    request = urllib.request.Request(worker.base_url + path, headers=worker.headers())  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, orjson.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"null"), dict(exc.headers)


def _wait(what: str, check: Callable[[], Any], timeout: float, worker: WorkerProcess) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"{what}: not within {timeout}s\n{worker.log_tail()}")


def _log_lines(worker: WorkerProcess) -> list[str]:
    return worker.log_path.read_text(errors="replace").splitlines()


async def _topics(settings: Settings) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        return sorted(await admin.list_topics())
    finally:
        await admin.close()


async def _send_one(settings: Settings, message_id: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        event = send_recorded_factory(message_id)
        topic = Topics.of(settings).send_results
        await producer.send_and_wait(topic, encode(event), key=message_id.encode())
    finally:
        await producer.stop()


def test_a_worker_while_kafka_is_away(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "kafka", port=free_port(), controller_port=free_port())
    broker.start()
    settings = _settings(broker, tmp_path)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        worker.start(timeout=90)
        asyncio.run(_send_one(settings, "o-1"))
        worker.record("o-1")

        # A clean start on a fresh cluster: nothing that an operator must learn to ignore.
        errors = [line for line in _log_lines(worker) if "ERROR" in line]
        assert errors == [], errors
        # Every topic the worker created (Faust's leader topic too) is under its prefix.
        created = [t for t in asyncio.run(_topics(settings)) if not t.startswith("__")]
        assert "outage.outage-__assignor-__leader" in created
        assert all(t.startswith("outage.") for t in created), created

        # The broker goes away.
        before = len(_log_lines(worker))
        broker.stop()
        stopped_at = time.time()
        answers: list[tuple[float, int, Any]] = []

        def unhealthy() -> Any:
            status, body, _ = _get(worker, "/health")
            answers.append((time.time() - stopped_at, status, body))
            return body if status == 503 else None

        body = _wait("/health 503", unhealthy, GRACE_MS / 1000 + 15, worker)
        assert body["status"] == "broker unreachable", body
        since = datetime.fromisoformat(body["since"]).timestamp()
        assert body["since"].endswith("Z"), body
        assert stopped_at - 2 <= since <= stopped_at + 5, (body, stopped_at)
        assert body["broker"]["reachable"] is False and body["broker"]["lastError"], body
        # Within the grace period it still answered 200: a short blip is not an outage.
        early = [(t, s) for t, s, _ in answers if t < GRACE_MS / 1000 - 1.5]
        assert early and all(s == 200 for _, s in early), answers
        # A probe without a token learns the state and since-when too.
        probe = urllib.request.Request(worker.base_url + "/health")  # noqa: S310
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(probe, timeout=5)  # noqa: S310
        assert orjson.loads(refused.value.read()) == {
            "status": "broker unreachable",
            "since": body["since"],
        }

        # Queries still answer from the local state, and say it is stale.
        status, record, headers = _get(worker, "/records/o-1")
        assert status == 200 and record["messageId"] == "o-1"
        assert headers.get("X-DeliveryTrack-Stale", "").startswith("broker unreachable since")

        # The log: a line per interval, not hundreds a second.
        time.sleep(max(0.0, stopped_at + OUTAGE_S - time.time()))
        outage_lines = _log_lines(worker)[before:]
        assert len(outage_lines) <= 12, "\n".join(outage_lines[:40])
        assert any("Kafka unreachable" in line for line in outage_lines), outage_lines
        assert any("more Kafka connection messages" in line for line in outage_lines), outage_lines

        # The broker comes back: healthy again, without a restart of the worker.
        broker.start()
        _wait("/health 200", lambda: _get(worker, "/health")[0] == 200, 60, worker)
        status, _, headers = _get(worker, "/records/o-1")
        assert status == 200 and "X-DeliveryTrack-Stale" not in headers

        # Gone again, and the worker is asked to stop: it does within its shutdown timeout.
        broker.stop()
        time.sleep(3)  # the clients are in their retry loops
        assert worker.proc is not None
        started = time.monotonic()
        code = worker.stop(timeout=120)
        took = time.monotonic() - started
        assert code == 0, worker.log_tail()
        assert took < SHUTDOWN_MS / 1000 + 3, (took, worker.log_tail())
    finally:
        worker.kill()
        broker.stop()
