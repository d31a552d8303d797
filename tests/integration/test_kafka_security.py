"""Kafka over TLS and SASL, end to end, against a real broker with SSL (client certificate
required), SASL_SSL (SCRAM-SHA-256/512) and SASL_PLAINTEXT (PLAIN) listeners and a throwaway CA
(tests/integration/secure_broker.py).

Every protocol connects with the settings a user gives (and not without them: a wrong
password, a missing client certificate, an unknown CA, plaintext to a TLS port); a worker run
over SCRAM and one over mutual TLS fold, poll, publish status changes, deliver a webhook and
stop cleanly, and the CLI (tail, history, replay --verify) and the client read and write over
the same connections. This module starts its own broker (the session's plaintext one is not
used here)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from deliverytrack.models.enums import TrackingStatus
from deliverytrack.models.settings import Settings
from deliverytrack.streams.api.client import DeliveryTrackClient
from deliverytrack.streams.dev.kafka_broker import KafkaBroker
from deliverytrack.streams.kafka.clients import kafka_client_kwargs
from deliverytrack.streams.kafka.topic_admin import ensure_topics
from deliverytrack.streams.topics import Topics
from tests.integration.conftest import ROOT, WorkerProcess, settings_env
from tests.integration.secure_broker import (
    KEY_PASSWORD,
    PASSWORD,
    USER,
    Pki,
    make_pki,
    secure_broker,
)
from tests.integration.support import FAST_POLLING, Provider, send
from tests.integration.test_outbound_webhooks import Receiver

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KafkaBroker, Pki]]:
    """The TLS/SASL broker for this module; failing to start it fails the tests."""
    root = tmp_path_factory.mktemp("secure-kafka")
    pki = make_pki(root / "pki")
    broker = secure_broker(root / "kafka", pki)
    error: str | None = None
    try:
        broker.start()
    except RuntimeError as exc:
        error = str(exc)
    if error is not None:
        pytest.fail(f"could not start the TLS/SASL test broker:\n{error}", pytrace=False)
    try:
        yield broker, pki
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def kafka_broker(secure: tuple[KafkaBroker, Pki]) -> KafkaBroker:
    """settings_factory's broker, here the secure one (tests pass the listener they use)."""
    return secure[0]


def scram(secure: tuple[KafkaBroker, Pki], mechanism: str = "SCRAM-SHA-512") -> dict[str, Any]:
    broker, pki = secure
    return {
        "broker": broker.listener_url("SASL_SSL"),
        "kafka_security_protocol": "SASL_SSL",
        "kafka_ssl_cafile": pki.ca,
        "kafka_sasl_mechanism": mechanism,
        "kafka_sasl_username": USER,
        "kafka_sasl_password": PASSWORD,
    }


def mutual_tls(secure: tuple[KafkaBroker, Pki]) -> dict[str, Any]:
    broker, pki = secure
    return {
        "broker": broker.listener_url("SSL"),
        "kafka_security_protocol": "SSL",
        "kafka_ssl_cafile": pki.ca,
        "kafka_ssl_certfile": pki.client_cert,
        "kafka_ssl_keyfile": pki.client_key,
        "kafka_ssl_key_password": KEY_PASSWORD,
    }


def sasl_plain(secure: tuple[KafkaBroker, Pki]) -> dict[str, Any]:
    return {
        "broker": secure[0].listener_url("SASL_PLAINTEXT"),
        "kafka_security_protocol": "SASL_PLAINTEXT",
        "kafka_sasl_mechanism": "PLAIN",
        "kafka_sasl_username": USER,
        "kafka_sasl_password": PASSWORD,
    }


async def read_all(settings: Settings, topic: str) -> list[bytes]:
    """Every value on ``topic`` so far, read over the settings' connection."""
    consumer = AIOKafkaConsumer(**kafka_client_kwargs(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        values: list[bytes] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batch = await consumer.getmany(timeout_ms=500)
            values.extend(m.value or b"" for records in batch.values() for m in records)
        return values
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    "connection",
    [
        pytest.param(lambda s: scram(s, "SCRAM-SHA-512"), id="SASL_SSL-SCRAM-SHA-512"),
        pytest.param(lambda s: scram(s, "SCRAM-SHA-256"), id="SASL_SSL-SCRAM-SHA-256"),
        pytest.param(mutual_tls, id="SSL-client-certificate"),
        pytest.param(sasl_plain, id="SASL_PLAINTEXT-PLAIN"),
    ],
)
async def test_each_protocol_connects_with_its_settings(
    secure: tuple[KafkaBroker, Pki], settings_factory: Any, connection: Any
) -> None:
    settings = settings_factory(**connection(secure))
    topics = Topics.of(settings)
    await ensure_topics(settings, topics, timeout=20)  # the admin client
    client = DeliveryTrackClient("http://127.0.0.1:1", settings)
    try:
        await client.record_send(send("tls-1", "P-1"))  # the client's producer
    finally:
        await client.close()
    (value,) = await asyncio.wait_for(read_all(settings, topics.send_results), 30)
    assert orjson.loads(value)["messageId"] == "tls-1"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"kafka_sasl_password": "not-the-password"}, "wrong SCRAM password"),
        ({"kafka_ssl_cafile": "other"}, "a CA that did not sign the broker's certificate"),
        ({"kafka_ssl_certfile": None, "kafka_ssl_keyfile": None, "tls": True}, "no client cert"),
        ({"plaintext": True}, "plaintext to the TLS port"),
    ],
)
async def test_a_client_without_the_right_credentials_is_refused(
    secure: tuple[KafkaBroker, Pki], change: dict[str, Any], why: str
) -> None:
    broker, pki = secure
    values = mutual_tls(secure) if change.pop("tls", False) else scram(secure)
    if change.pop("plaintext", False):
        values = {"broker": broker.listener_url("SSL")}
    if change.get("kafka_ssl_cafile") == "other":
        change["kafka_ssl_cafile"] = pki.other_ca
    settings = Settings(**{**values, **change})
    admin = AIOKafkaAdminClient(**kafka_client_kwargs(settings), request_timeout_ms=5_000)
    try:
        with pytest.raises(KafkaError):
            await asyncio.wait_for(admin.start(), 20)
    finally:
        await admin.close()


async def run_cli(settings: Settings, *args: str, timeout: float = 120) -> str:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "deliverytrack", *args],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


async def run_worker_end_to_end(
    settings: Settings, provider: Provider, receiver: Receiver, log: Path
) -> None:
    """A worker over ``settings``' connection: a send result in (client), polled to
    DELIVERED (poll loop), status changes out (fold), a webhook delivered (dispatcher), read
    back with the API, the CLI tail and history, and replayed with --verify after a clean
    stop."""
    worker = await WorkerProcess(settings, log).astart(timeout=90)
    try:
        provider_message_id = await provider.accept()
        async with DeliveryTrackClient(worker.base_url, settings, token=worker.token) as client:
            await client.record_send(send("tls-e2e", provider_message_id))
            record = await client.wait_for(
                "tls-e2e", lambda r: r.status == TrackingStatus.DELIVERED, timeout=60
            )
        assert [h.status for h in record.status_history][-1] == TrackingStatus.DELIVERED
        await receiver.wait("hook", 2, timeout=30)
        tail = await run_cli(settings, "tail", "--from-beginning", "--json", "--max", "2")
        changes = [orjson.loads(line) for line in tail.splitlines()]
        assert [(c["messageId"], c["status"]) for c in changes] == [
            ("tls-e2e", "SENT"),
            ("tls-e2e", "DELIVERED"),
        ]
        history = orjson.loads(await run_cli(settings, "history", "tls-e2e", "--json"))
        assert len(history) >= 2
    finally:
        code = await asyncio.to_thread(worker.stop)
    assert code == 0, worker.log_tail()
    await run_cli(settings, "replay", "--verify", "--timeout", "90")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


@pytest.fixture
def hook_settings(receiver: Receiver) -> dict[str, Any]:
    return {
        "polling": FAST_POLLING,
        "webhooks": [{"id": "hook", "url": f"{receiver.base_url}/hook", "events": ["*"]}],
    }


async def test_a_worker_runs_end_to_end_over_sasl_ssl_with_scram(
    secure: tuple[KafkaBroker, Pki],
    settings_factory: Any,
    provider: Provider,
    receiver: Receiver,
    hook_settings: dict[str, Any],
    tmp_path: Path,
) -> None:
    settings = settings_factory(
        **scram(secure),
        **hook_settings,
        providers={"sim": {"kind": "simulated", "baseUrl": provider.base_url}},
    )
    await run_worker_end_to_end(settings, provider, receiver, tmp_path / "worker.log")


async def test_a_worker_runs_end_to_end_over_mutual_tls(
    secure: tuple[KafkaBroker, Pki],
    settings_factory: Any,
    provider: Provider,
    receiver: Receiver,
    hook_settings: dict[str, Any],
    tmp_path: Path,
) -> None:
    settings = settings_factory(
        **mutual_tls(secure),
        **hook_settings,
        providers={"sim": {"kind": "simulated", "baseUrl": provider.base_url}},
    )
    await run_worker_end_to_end(settings, provider, receiver, tmp_path / "worker.log")
