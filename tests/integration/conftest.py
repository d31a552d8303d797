"""Integration fixtures: per-test settings (fresh topics, group, state), a worker process,
and small Kafka read/write helpers. Every wait is bounded."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition
from pydantic import SecretStr

from deliverytrack.models.codec import encode
from deliverytrack.models.settings import Settings
from deliverytrack.streams.providers.simulated import (
    SimulatedProviderConfig,
    SimulatedProviderServer,
)
from deliverytrack.streams.topics import Topics
from tests.integration.support import Provider

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]


def _port_block() -> range:
    """The ports this test process hands out: below the kernel's ephemeral range (so no
    outgoing connection, of any process, takes one between ``free_port()`` and the worker's
    bind), one block per xdist worker (so two test processes never hand out the same one)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32_768
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % 8
    size = min(1_500, (low - 10_000) // 8)
    return range(10_000 + index * size, 10_000 + (index + 1) * size) if size >= 100 else range(0)


_PORTS = _port_block()
_next_port = itertools.count(secrets.randbelow(len(_PORTS) or 1))  # another session: elsewhere


def free_port() -> int:
    for _ in range(len(_PORTS)):
        port = _PORTS[next(_next_port) % len(_PORTS)]
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # no block below the ephemeral range: any free port
        sock.bind(("127.0.0.1", 0))
        picked: int = sock.getsockname()[1]
        return picked


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def settings_factory(kafka_broker: Any, tmp_path: Path) -> SettingsFactory:
    """Settings with a fresh topic prefix, app id (consumer group) and data dir per test."""
    tag = uuid.uuid4().hex[:8]

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "broker": kafka_broker.url,
            "app_id": f"dt-{tag}",
            "topic_prefix": f"t{tag}.",
            "data_dir": tmp_path / "data",
            "web_port": free_port(),
            "webhook_port": free_port(),
            # Every test worker requires a token (WorkerProcess sends it), as in production.
            "api_tokens": (secrets.token_urlsafe(24),),
            # The tests' webhook receivers run on loopback: allowed, as an operator allows an
            # internal host (tests of the SSRF rules pass their own list).
            "webhook_allowed_hosts": ("127.0.0.1",),
            "partitions": 4,
            "consumer_session_timeout_ms": 6_000,
            "consumer_heartbeat_interval_ms": 500,
            "fold_batch_timeout_ms": 20,
            "producer_linger_ms": 5,
            # The factories' events happened on 2026-11-23: without this, every record would be
            # due at once. Tests of polling pass their own polling settings.
            "polling": {"intervalMs": 3_600_000},
        }
        values.update(overrides)
        return Settings(**values)

    return make


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as the DELIVERYTRACK_* environment a worker process reads."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("DELIVERYTRACK_") or key == "DELIVERYTRACK_KAFKA_HOME"
    }
    data = settings.model_dump(mode="json", by_alias=True)
    # Secrets in clear (model_dump masks SecretStr), so the worker gets the real ones.
    data["providers"] = {
        provider_id: {
            key: value.get_secret_value() if isinstance(value, SecretStr) else value
            for key, value in config.model_dump(by_alias=True, exclude_none=True).items()
        }
        for provider_id, config in settings.providers.items()
    }
    data["webhook_secrets"] = {
        ref: secret.get_secret_value() for ref, secret in settings.webhook_secrets.items()
    }
    data["pii"] = _in_clear(settings.pii.model_dump(by_alias=True))
    for name in ("api_tokens", "api_pii_tokens"):  # comma-separated, in clear
        data[name] = ",".join(t.get_secret_value() for t in getattr(settings, name)) or None
    for name in ("kafka_sasl_password", "kafka_ssl_key_password"):
        data[name] = _in_clear(getattr(settings, name))
    data["webhook_headers"] = _in_clear(settings.webhook_headers)
    for name, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict | list):
            env[f"DELIVERYTRACK_{name.upper()}"] = orjson.dumps(value).decode()
        else:
            env[f"DELIVERYTRACK_{name.upper()}"] = str(value)
    return env


def _in_clear(value: Any) -> Any:
    """A model dump with its SecretStr values revealed (for the worker's environment)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {key: _in_clear(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_in_clear(item) for item in value]
    return value


class WorkerProcess:
    """``python -m deliverytrack worker`` as a child process, as a user runs it."""

    def __init__(self, settings: Settings, log_path: Path, argv: list[str] | None = None) -> None:
        self.settings = settings
        self.log_path = log_path
        self.argv = argv or [sys.executable, "-m", "deliverytrack", "worker"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The API listener (queries, /internal/query, admin; a token needed)."""
        return f"http://127.0.0.1:{self.settings.web_port}"

    @property
    def webhook_url(self) -> str:
        """The webhook listener (``POST /webhooks/{providerId}``)."""
        return f"http://127.0.0.1:{self.settings.webhook_port}"

    @property
    def token(self) -> str | None:
        """The token this helper sends to the API listener (the worker's first)."""
        tokens = (*self.settings.api_tokens, *self.settings.api_pii_tokens)
        return tokens[0].get_secret_value() if tokens else None

    def headers(self) -> dict[str, str]:
        """``Authorization: Bearer <token>`` for the API listener (empty without tokens)."""
        return {} if self.token is None else {"Authorization": f"Bearer {self.token}"}

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=settings_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            status, _ = self.http_get("/health")
            if status == 200:
                return
            time.sleep(0.2)
        pytest.fail(f"worker not ready after {timeout}s:\n{self.log_tail()}")

    def http_get(self, path: str) -> tuple[int, Any]:
        """GET on the API listener, with the worker's token."""
        request = urllib.request.Request(self.base_url + path, headers=self.headers())  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                return response.status, orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, orjson.loads(exc.read() or b"null")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, None

    def record(
        self, message_id: str, until: Callable[[Any], bool] = bool, timeout: float = 15.0
    ) -> Any:
        """GET /records/{messageId} until ``until(body)`` holds (the table trails the topic)."""
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.http_get(f"/records/{message_id}")
            if status == 200 and until(body):
                return body
            if time.monotonic() > deadline:
                pytest.fail(f"record {message_id}: last answer {status} {body}")
            time.sleep(0.1)

    async def aget(self, path: str) -> tuple[int, Any]:
        """``http_get`` without blocking the test's event loop (it may serve a provider)."""
        return await asyncio.to_thread(self.http_get, path)

    async def arecord(
        self, message_id: str, until: Callable[[Any], bool] = bool, timeout: float = 15.0
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            status, body = await self.aget(f"/records/{message_id}")
            if status == 200 and until(body):
                return body
            if time.monotonic() > deadline:
                pytest.fail(f"record {message_id}: last answer {status} {body}")
            await asyncio.sleep(0.1)

    async def astart(self, timeout: float = 60.0) -> WorkerProcess:
        return await asyncio.to_thread(self.start, timeout)

    def log_tail(self, lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def make(settings: Settings, argv: list[str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(workers)}.log", argv)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.kill()


class KafkaIO:
    """Produce events with the right keys; read topics from the beginning with a deadline."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.topics = Topics.of(settings)
        self.producer = producer

    async def send(self, topic: str, key: str | bytes | None, value: Any) -> None:
        if isinstance(value, bytes) or value is None:
            raw = value
        elif isinstance(value, dict):
            raw = orjson.dumps(value)
        else:
            raw = encode(value)
        key_bytes = key.encode() if isinstance(key, str) else key
        await self.producer.send_and_wait(topic, raw, key=key_bytes)

    async def read(
        self,
        topic: str,
        until: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
        timeout: float = 30.0,
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """Everything on ``topic`` so far, once ``until(messages)`` holds (or fail)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers, enable_auto_commit=False
        )
        await consumer.start()
        try:
            partitions = await asyncio.wait_for(self.producer.partitions_for(topic), timeout)
            deadline = time.monotonic() + timeout
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            messages: list[ConsumerRecord[bytes, bytes]] = []
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    messages.extend(records)
                if until(messages):
                    return messages
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"timed out after {timeout}s reading {topic}: {len(messages)} messages"
                    )
        finally:
            await consumer.stop()

    async def read_json(
        self, topic: str, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        messages = await self.read(
            topic, lambda ms: until([orjson.loads(m.value) for m in ms]), timeout
        )
        return [orjson.loads(m.value) for m in messages]


@pytest.fixture
async def kafka_io_factory() -> AsyncIterator[Callable[[Settings], KafkaIO]]:
    producers: list[AIOKafkaProducer] = []
    clients: dict[str, KafkaIO] = {}

    async def make(settings: Settings) -> KafkaIO:
        if settings.topic_prefix not in clients:
            producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=2)
            await producer.start()
            producers.append(producer)
            clients[settings.topic_prefix] = KafkaIO(settings, producer)
        return clients[settings.topic_prefix]

    yield make  # type: ignore[misc]
    for producer in producers:
        await producer.stop()


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    server = SimulatedProviderServer(SimulatedProviderConfig(delivery_delay_ms_min=0))
    base_url = await server.start()
    client = Provider(server, base_url)
    yield client
    await client.session.close()
    await server.stop()
