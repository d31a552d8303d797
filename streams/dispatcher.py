"""Outbound webhook dispatcher: status changes -> signed POSTs, retries scheduled through Kafka.

Two consumers in the worker. One reads ``status-changes`` (group ``<appId>.webhooks``) and makes
the first attempt of every delivery; a failed attempt that may be retried is published to the
internal retry topic with its ``notBefore`` time. The other reads the retry topic (group
``<appId>.webhook-retries``), waits until a delivery is due and tries again. Offsets are
committed only after an attempt's outcome (and its retry) is acknowledged by Kafka, so a worker
killed between retries loses no delivery; a kill during an attempt may repeat it (receivers
deduplicate by ``X-DeliveryTrack-Delivery``). Every attempt's outcome is a ``WebhookAttempted``
on ``webhook-deliveries``; after the last retry the delivery goes to ``dead-letters``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition
from pydantic import ValidationError

from deliverytrack.models.codec import encode
from deliverytrack.models.events import DeadLetter
from deliverytrack.models.settings import Settings
from deliverytrack.models.webhooks import WebhookAttempted, WebhookDelivery, WebhookEndpoint
from deliverytrack.streams.supervision import TaskFailure
from deliverytrack.streams.topics import Topics
from deliverytrack.streams.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from deliverytrack.tables.outbound import deliveries_for, next_attempt, should_retry

log = logging.getLogger(__name__)

USER_AGENT = "deliverytrack-webhook/1"


class WebhookDispatcher:
    def __init__(self, settings: Settings, topics: Topics | None = None) -> None:
        self.settings = settings
        self.topics = topics or Topics.from_prefix(settings.topic_prefix, settings.app_id)
        self.delivered = 0
        self.failed_attempts = 0
        self.exhausted = 0
        self._producer: AIOKafkaProducer | None = None
        self._session: aiohttp.ClientSession | None = None
        self._consumers: list[AIOKafkaConsumer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._limit = asyncio.Semaphore(64)
        self.failure = TaskFailure("webhooks")

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=f"{settings.app_id}-webhooks",
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
        )
        await self._producer.start()
        self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        for topic, group, loop in (
            (self.topics.status_changes, f"{settings.app_id}.webhooks", self._first_attempts),
            (self.topics.webhook_retries, f"{settings.app_id}.webhook-retries", self._retries),
        ):
            consumer = AIOKafkaConsumer(
                topic,
                bootstrap_servers=settings.bootstrap_servers,
                client_id=f"{settings.app_id}-webhooks",
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=settings.consumer_session_timeout_ms,
                heartbeat_interval_ms=settings.consumer_heartbeat_interval_ms,
                max_poll_interval_ms=600_000,
            )
            await consumer.start()
            self._consumers.append(consumer)
            task = asyncio.create_task(loop(consumer), name=f"webhooks-{group}")
            self.failure.watch(task, lambda: self._stopping)
            self._tasks.append(task)

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for consumer in self._consumers:
            await consumer.stop()
        if self._session is not None:
            await self._session.close()
        if self._producer is not None:
            await self._producer.stop()

    # --- loops ------------------------------------------------------------------------------

    async def _first_attempts(self, consumer: AIOKafkaConsumer) -> None:
        while not self._stopping:
            try:
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
            except KafkaError as exc:
                log.warning("webhooks: fetch failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            work: list[tuple[ConsumerRecord[bytes, bytes], WebhookDelivery]] = []
            for records in batch.values():
                for msg in records:
                    work.extend((msg, d) for d in self._deliveries(msg))
            await asyncio.gather(*(self._attempt(msg, delivery) for msg, delivery in work))
            await self._commit(consumer, batch)

    async def _retries(self, consumer: AIOKafkaConsumer) -> None:
        while not self._stopping:
            try:
                batch = await consumer.getmany(timeout_ms=200, max_records=100)
            except KafkaError as exc:
                log.warning("webhooks: fetch failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            for tp, records in batch.items():
                for msg in records:
                    delivery = self._retry_of(msg)
                    if delivery is not None:
                        wait = (delivery.not_before - datetime.now(UTC)).total_seconds()
                        while wait > 0 and not self._stopping:
                            await asyncio.sleep(min(wait, 0.5))
                            wait = (delivery.not_before - datetime.now(UTC)).total_seconds()
                        await self._attempt(msg, delivery)
                    await self._commit(consumer, {tp: [msg]})

    async def _commit(
        self,
        consumer: AIOKafkaConsumer,
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
    ) -> None:
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
        if offsets:
            try:
                await consumer.commit(offsets)
            except KafkaError as exc:
                log.info("webhooks: commit skipped (%s)", exc)

    # --- deliveries -------------------------------------------------------------------------

    def _deliveries(self, msg: ConsumerRecord[bytes, bytes]) -> list[WebhookDelivery]:
        try:
            change = orjson.loads(msg.value or b"")
            own = (change.get("record") or {}).get("webhooks") or []
            endpoints: Iterable[WebhookEndpoint] = [
                *self.settings.webhooks,
                *(WebhookEndpoint.model_validate(e) for e in own),
            ]
            return deliveries_for(change, endpoints, datetime.now(UTC))
        except (orjson.JSONDecodeError, ValidationError, KeyError, TypeError) as exc:
            log.warning("webhooks: skipping undecodable status change %s: %s", msg.offset, exc)
            return []

    def _retry_of(self, msg: ConsumerRecord[bytes, bytes]) -> WebhookDelivery | None:
        try:
            return WebhookDelivery.model_validate_json(msg.value or b"")
        except ValidationError as exc:
            log.warning("webhooks: skipping undecodable retry %s: %s", msg.offset, exc)
            return None

    def _secret(self, endpoint: WebhookEndpoint) -> str | None:
        if endpoint.secret_ref is None:
            return None
        secret = self.settings.webhook_secrets.get(endpoint.secret_ref)
        if secret is None:
            raise LookupError(f"secretRef {endpoint.secret_ref!r} is not configured")
        return secret.get_secret_value()

    async def _post(self, delivery: WebhookDelivery) -> tuple[int | None, str | None, int]:
        """(HTTP status, error, latency ms) of one attempt."""
        endpoint = delivery.endpoint
        body = orjson.dumps(delivery.payload)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-DeliveryTrack-Event": delivery.event_type,
            "X-DeliveryTrack-Delivery": delivery.delivery_id,
            "X-DeliveryTrack-Attempt": str(delivery.attempt),
            TIMESTAMP_HEADER: str(timestamp),
            **endpoint.headers,
        }
        started = time.monotonic()
        try:
            secret = self._secret(endpoint)
            if secret is not None:
                headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
            if self._session is None:
                raise RuntimeError("the dispatcher is not started")
            async with (
                self._limit,
                self._session.post(
                    endpoint.url,
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=endpoint.timeout_ms / 1000),
                ) as response,
            ):
                await response.read()
                status = response.status
            error = None if 200 <= status < 300 else f"HTTP {status}"
            return status, error, int((time.monotonic() - started) * 1000)
        except LookupError as exc:
            return None, str(exc), 0
        except TimeoutError:
            return None, f"timeout after {endpoint.timeout_ms} ms", endpoint.timeout_ms
        except aiohttp.ClientError as exc:
            return None, f"connection error: {exc}", int((time.monotonic() - started) * 1000)

    async def _attempt(self, msg: ConsumerRecord[bytes, bytes], delivery: WebhookDelivery) -> None:
        status, error, latency = await self._post(delivery)
        now = datetime.now(UTC)
        attempted: dict[str, Any] = {
            "delivery_id": delivery.delivery_id,
            "endpoint_id": delivery.endpoint.id,
            "event_id": delivery.event_id,
            "message_id": delivery.message_id,
            "attempt": delivery.attempt,
            "http_status": status,
            "latency_ms": latency,
            "attempted_at": now,
        }
        producer = self._producer
        if producer is None:
            raise RuntimeError("the dispatcher is not started")
        key = delivery.message_id.encode()
        acks = []
        if error is None:
            self.delivered += 1
            outcome = WebhookAttempted(outcome="delivered", **attempted)
        else:
            retry = next_attempt(delivery, now) if should_retry(status, error) else None
            if retry is not None:
                self.failed_attempts += 1
                outcome = WebhookAttempted(
                    outcome="failed", error=error, next_attempt_at=retry.not_before, **attempted
                )
                acks.append(
                    await producer.send(self.topics.webhook_retries, encode(retry), key=key)
                )
            else:
                self.exhausted += 1
                outcome = WebhookAttempted(outcome="exhausted", error=error, **attempted)
                letter = DeadLetter(
                    topic=msg.topic,
                    partition=msg.partition,
                    offset=msg.offset,
                    key_base64=base64.b64encode(key).decode(),
                    value_base64=base64.b64encode(encode(delivery)).decode(),
                    value_text=encode(delivery).decode(),
                    reason="webhook-undeliverable",
                    error=f"{delivery.endpoint.url}: attempt {delivery.attempt}: {error}",
                    failed_at=now,
                )
                acks.append(await producer.send(self.topics.dead_letters, encode(letter), key=key))
        acks.append(await producer.send(self.topics.webhook_deliveries, encode(outcome), key=key))
        await asyncio.gather(*acks)
