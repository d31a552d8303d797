"""Outbound webhook dispatcher: status changes -> signed POSTs, retries scheduled through Kafka.

Two consumers in the worker. One reads ``status-changes`` (group ``<appId>.webhooks``) and makes
the first attempt of every delivery; a failed attempt that may be retried is published to the
internal retry topic with its ``notBefore`` time. The other reads the retry topic (group
``<appId>.webhook-retries``) and gives every retry its own timer: a retry due in a day never
delays one due in a second (no head-of-line blocking). At most ``MAX_PENDING_RETRIES`` retries
(``MAX_PENDING_RETRY_BYTES`` of values) wait in memory; past that the retry partitions are paused
until some are done.

Offsets: a status change's offset is committed once its deliveries' outcomes are acknowledged
by Kafka; a retry partition is committed only up to its oldest retry not yet done, so a worker
killed or restarted loses no pending retry (it reads them again). The retries already done
above that position travel in the commit's metadata, and a worker that takes the partition over
skips them instead of repeating them. A kill during an attempt may repeat it (receivers
deduplicate by ``X-DeliveryTrack-Delivery``). Every attempt's outcome is a ``WebhookAttempted``
on ``webhook-deliveries``; after the last retry the delivery goes to ``dead-letters``.

Where a delivery may go (streams/webhooks/egress.py, tables/outbound.py): every target is
checked before it is called (OWASP SSRF rules: no loopback, private, link-local, multicast,
unspecified, reserved or metadata address unless ``DELIVERYTRACK_WEBHOOK_ALLOWED_HOSTS`` allows
it; the connection goes to the address that was checked; no redirects; at most a few KiB of an
answer read, only its status and a short sanitised reason published). A per-message endpoint
may use a ``secretRef`` (its signing secret and header set) only on the hosts the operator bound
it to (``DELIVERYTRACK_WEBHOOK_SECRET_HOSTS``); operator endpoints (``DELIVERYTRACK_WEBHOOKS``)
may use any. A target refused is an outcome ``refused`` with the reason: not retried, not a
dead letter.

Per-input boundary (streams/boundary.py): whatever goes wrong with ONE status change, ONE
delivery or ONE retry record (it does not decode, an endpoint is invalid, building or making the
attempt raises, its outputs are refused by the producer or the broker, e.g. too large) makes a
dead letter with the reason and (a bounded copy of) the original bytes, and the dispatcher goes
on. A retry is delivered, dead-lettered or still pending, never dropped. Only infrastructure
failures (Kafka unreachable past the producer's own retries) end a loop, and so the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import orjson
import yarl
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition
from multidict import CIMultiDict

from deliverytrack.models.codec import encode
from deliverytrack.models.outbound import WebhookAttempted, WebhookDelivery, WebhookEndpoint
from deliverytrack.models.settings import Settings
from deliverytrack.streams.boundary import (
    REFUSED_RECORD_ERRORS,
    Refused,
    Source,
    check_size,
    dead_letter,
    published_refusal,
    refusal,
)
from deliverytrack.streams.clock import utc_now
from deliverytrack.streams.kafka.clients import new_consumer, new_producer
from deliverytrack.streams.kafka.membership import Rebalance
from deliverytrack.streams.kafka.offsets import PendingOffsets
from deliverytrack.streams.supervision import TaskFailure
from deliverytrack.streams.topics import Topics
from deliverytrack.streams.webhooks.egress import (
    MAX_RESPONSE_BYTES,
    TargetRefused,
    check_literal,
    guarded_session,
    sanitised,
)
from deliverytrack.streams.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from deliverytrack.tables.outbound import (
    AllowList,
    deliveries_for,
    header_value,
    next_attempt,
    own_endpoints,
    secret_allowed_for,
    should_retry,
)

log = logging.getLogger(__name__)

USER_AGENT = "deliverytrack-webhook/1"
MAX_PENDING_RETRIES = 10_000
MAX_PENDING_RETRY_BYTES = 64 * 1_048_576
COMMIT_INTERVAL_S = 0.5
MAX_SLEEP_S = 30.0
"""A waiting retry looks at the wall clock at least this often (the clock may be set)."""
# A rebalance or a stop waits for the attempts in flight: the longest endpoint timeout (60 s)
# plus their outputs' acks.
DRAIN_TIMEOUT_S = 75.0
METADATA_PREFIX = "dt1:"
MAX_METADATA_CHARS = 3_000
"""The broker keeps at most ``offset.metadata.max.bytes`` (default 4,096) per commit."""

Outputs = list[tuple[str, bytes | None, bytes]]


def encode_done(position: int, done: Iterable[int]) -> str:
    """The offsets at or above ``position`` that are done, as ``dt1:`` plus ranges relative to
    ``position`` (``2-4,9``). Cut (the highest offsets first) to ``MAX_METADATA_CHARS``: those
    are merely attempted again after a restart."""
    parts: list[str] = []
    length = len(METADATA_PREFIX)
    start = end = None
    for offset in sorted(o - position for o in done if o >= position):
        if end is not None and offset == end + 1:
            end = offset
            continue
        if start is not None:
            part = str(start) if start == end else f"{start}-{end}"
            if length + len(part) + 1 > MAX_METADATA_CHARS:
                return METADATA_PREFIX + ",".join(parts)
            parts.append(part)
            length += len(part) + 1
        start = end = offset
    if start is not None:
        part = str(start) if start == end else f"{start}-{end}"
        if length + len(part) + 1 <= MAX_METADATA_CHARS:
            parts.append(part)
    return METADATA_PREFIX + ",".join(parts) if parts else ""


def decode_done(position: int, metadata: str | None) -> set[int]:
    """The absolute offsets :func:`encode_done` wrote; nothing for anything else."""
    if not metadata or not metadata.startswith(METADATA_PREFIX):
        return set()
    done: set[int] = set()
    try:
        for part in metadata[len(METADATA_PREFIX) :].split(","):
            low, _, high = part.partition("-")
            first, last = int(low), int(high or low)
            if first < 0 or last < first or last - first > 1_000_000:
                return set()
            done.update(range(position + first, position + last + 1))
    except ValueError:
        return set()
    return done


class RetryOffsets(PendingOffsets):
    """Pending retries per partition, plus the retries done above the oldest pending one: the
    commit position is that oldest one, and the done ones go into the commit's metadata."""

    def __init__(self) -> None:
        super().__init__()
        self.done: dict[TopicPartition, set[int]] = {}
        self.skip: dict[TopicPartition, set[int]] = {}
        self.sent: dict[TopicPartition, tuple[int, str]] = {}

    def finished(self, tp: TopicPartition, offset: int) -> None:
        if offset in self.in_flight.get(tp, ()):  # not for a partition forgotten meanwhile
            super().finished(tp, offset)
            self.done.setdefault(tp, set()).add(offset)

    def to_commit(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, Any]:
        """``OffsetAndMetadata`` per partition whose position or done set changed."""
        result: dict[TopicPartition, Any] = {}
        for tp in partitions:
            if tp not in self.next_fetched:
                continue
            pending = self.in_flight.get(tp)
            position = min(pending) if pending else self.next_fetched[tp]
            done = self.done.get(tp, set())
            done.difference_update([o for o in done if o < position])
            metadata = encode_done(position, done)
            if self.sent.get(tp) != (position, metadata):
                result[tp] = OffsetAndMetadata(position, metadata)
        return result

    def committed_now(self, offsets: dict[TopicPartition, Any]) -> None:
        for tp, meta in offsets.items():
            self.sent[tp] = (meta.offset, meta.metadata)
            self.committed[tp] = meta.offset

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        partitions = list(partitions)
        super().forget(partitions)
        for tp in partitions:
            self.done.pop(tp, None)
            self.skip.pop(tp, None)
            self.sent.pop(tp, None)


@dataclass(frozen=True, slots=True)
class _Result:
    """One attempt: the answer's status and, unless 2xx, the error; or why it was refused."""

    status: int | None = None
    error: str | None = None
    latency_ms: int = 0
    refused: str | None = None


@dataclass(slots=True)
class _Pending:
    """A retry waiting for its time (cancelled on a revoke) or being attempted (waited for)."""

    size: int
    attempting: bool = False
    task: asyncio.Task[None] | None = None


class WebhookDispatcher:
    def __init__(
        self,
        settings: Settings,
        topics: Topics | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.topics = topics or Topics.of(settings)
        self.clock = clock
        self.delivered = 0
        self.failed_attempts = 0
        self.exhausted = 0
        self.refused = 0
        self.dead_letters = 0
        self.allowed = AllowList.parse(settings.webhook_allowed_hosts)
        # Operator endpoints (DELIVERYTRACK_WEBHOOKS) may use any secretRef; any other endpoint
        # is a producer's, whatever a status change or a retry record says.
        self._operator_endpoints = {endpoint.id: endpoint for endpoint in settings.webhooks}
        self._producer: AIOKafkaProducer | None = None
        self._session: aiohttp.ClientSession | None = None
        self._consumers: list[AIOKafkaConsumer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._limit = asyncio.Semaphore(64)
        self.failure = TaskFailure("webhooks")
        # The retry consumer's state.
        self._retry_consumer: AIOKafkaConsumer | None = None
        self._retry_offsets = RetryOffsets()
        self._retry_assigned: set[TopicPartition] = set()
        self._pending: dict[TopicPartition, dict[int, _Pending]] = {}
        self._pending_count = 0
        self._pending_bytes = 0
        self._retry_error: BaseException | None = None
        self._last_commit = 0.0

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        self._producer = new_producer(
            settings,
            client_id=f"{settings.app_id}-webhooks",
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            # A retry carries its payload (a status change, with its record): up to what the
            # topics the worker creates accept, and refused by the producer (for that delivery
            # only) beyond.
            max_request_size=settings.max_message_bytes,
        )
        await self._producer.start()
        self._session = self.new_session()
        fetch_bytes = settings.max_message_bytes + 65_536
        common: dict[str, Any] = {
            "client_id": f"{settings.app_id}-webhooks",
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "session_timeout_ms": settings.consumer_session_timeout_ms,
            "heartbeat_interval_ms": settings.consumer_heartbeat_interval_ms,
            "max_poll_interval_ms": 600_000,
            "max_partition_fetch_bytes": fetch_bytes,
        }
        changes_group = f"{settings.app_id}.webhooks"
        changes = new_consumer(
            settings,
            self.topics.status_changes,
            group_id=changes_group,
            **common,
        )
        retries_group = f"{settings.app_id}.webhook-retries"
        retries = new_consumer(
            settings,
            group_id=retries_group,
            rebalance_timeout_ms=int(1000 * DRAIN_TIMEOUT_S) + 5_000,
            **common,
        )
        retries.subscribe(
            [self.topics.webhook_retries],
            listener=Rebalance(self._retries_revoked, self._retries_assigned),
        )
        self._retry_consumer = retries
        for consumer, group, loop in (
            (changes, changes_group, self._first_attempts),
            (retries, retries_group, self._retries),
        ):
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
        await self._drain_retries(set(self._pending))
        if self._retry_consumer is not None:
            await self._commit_retries(self._retry_consumer, self._retry_assigned)
        for consumer in self._consumers:
            await consumer.stop()
        if self._session is not None:
            await self._session.close()
        if self._producer is not None:
            await self._producer.stop()

    def new_session(self) -> aiohttp.ClientSession:
        """The HTTP session of the attempts: connections only to the addresses the SSRF rules
        allow (streams/webhooks/egress.py)."""
        return guarded_session(self.allowed, USER_AGENT)

    @property
    def pending_retries(self) -> int:
        return self._pending_count

    # --- first attempts ---------------------------------------------------------------------

    async def _first_attempts(self, consumer: AIOKafkaConsumer) -> None:
        while not self._stopping:
            try:
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
            except KafkaError as exc:
                log.warning("webhooks: fetch failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            await self.handle_changes([msg for records in batch.values() for msg in records])
            offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
            if offsets:
                try:
                    await consumer.commit(offsets)
                except KafkaError as exc:
                    log.info("webhooks: commit skipped (%s)", exc)

    async def handle_changes(self, messages: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """The first attempts of the deliveries of ``messages`` (status changes), each through
        the per-input boundary; returns when every outcome is acknowledged."""
        work: list[tuple[Source, WebhookDelivery]] = []
        for msg in messages:
            source = _source(msg)
            try:
                deliveries, invalid = self._deliveries(msg)
            except Exception as exc:  # this status change, not the dispatcher
                await self._refused(source, exc)
                continue
            for error in invalid:
                await self._refused(source, Refused("invalid-webhook-endpoint", error))
            work.extend((source, delivery) for delivery in deliveries)
        await asyncio.gather(*(self._guarded(source, delivery) for source, delivery in work))

    def _deliveries(
        self, msg: ConsumerRecord[bytes, bytes]
    ) -> tuple[list[WebhookDelivery], list[str]]:
        """The deliveries of the status change ``msg``, and why each of its own endpoints that
        is invalid is. Raises :class:`Refused` for a status change that cannot be delivered."""
        check_size(msg.value, self.settings.max_message_bytes, "too-large", "the status change")
        try:
            change = orjson.loads(msg.value or b"")
        except orjson.JSONDecodeError as exc:
            raise Refused("malformed-json", str(exc)) from exc
        try:
            own, invalid = own_endpoints(change)
            endpoints: list[WebhookEndpoint] = [*self.settings.webhooks, *own]
            return deliveries_for(change, endpoints, self.clock()), invalid
        except (ValueError, TypeError, RecursionError) as exc:  # ValidationError included
            raise Refused("invalid-status-change", str(exc)) from exc

    # --- retries ----------------------------------------------------------------------------

    async def _retries(self, consumer: AIOKafkaConsumer) -> None:
        while not self._stopping:
            if self._retry_error is not None:
                raise self._retry_error  # an infrastructure failure in a retry's task
            if (
                self._pending_count >= MAX_PENDING_RETRIES
                or self._pending_bytes >= MAX_PENDING_RETRY_BYTES
            ):
                consumer.pause(*consumer.assignment())
            elif consumer.paused():
                consumer.resume(*consumer.paused())
            try:
                batch = await consumer.getmany(timeout_ms=200, max_records=100)
            except KafkaError as exc:
                log.warning("webhooks: fetch failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            for tp, records in batch.items():
                if tp not in self._retry_assigned:  # revoked while the fetch was in flight
                    continue
                for msg in records:
                    self.schedule_retry(tp, msg)
            if time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S:
                await self._commit_retries(consumer, self._retry_assigned)

    def schedule_retry(self, tp: TopicPartition, msg: ConsumerRecord[bytes, bytes]) -> None:
        """Give the retry ``msg`` its own task: it waits for its ``notBefore`` and is then
        attempted, whatever the retries before and after it do."""
        self._retry_offsets.started(tp, msg.offset)
        if msg.offset in self._retry_offsets.skip.get(tp, ()):
            self._retry_offsets.finished(tp, msg.offset)  # done before a restart or a rebalance
            return
        pending = _Pending(size=len(msg.value or b""))
        self._pending.setdefault(tp, {})[msg.offset] = pending
        self._pending_count += 1
        self._pending_bytes += pending.size
        task = asyncio.create_task(self._retry(tp, msg, pending), name=f"webhook-retry-{tp}")
        pending.task = task
        task.add_done_callback(lambda done: self._retry_ended(tp, msg.offset, pending, done))

    def _retry_ended(
        self, tp: TopicPartition, offset: int, pending: _Pending, task: asyncio.Task[None]
    ) -> None:
        by_offset = self._pending.get(tp, {})
        if by_offset.get(offset) is pending:
            del by_offset[offset]
            if not by_offset:
                self._pending.pop(tp, None)
        self._pending_count -= 1
        self._pending_bytes -= pending.size
        if not task.cancelled() and task.exception() is not None and self._retry_error is None:
            self._retry_error = task.exception()

    async def _retry(
        self, tp: TopicPartition, msg: ConsumerRecord[bytes, bytes], pending: _Pending
    ) -> None:
        source = _source(msg)
        try:
            # Only the bytes wait in memory, not the decoded payload.
            not_before = self._retry_of(msg).not_before
        except Exception as exc:  # this retry record, not the dispatcher
            await self._refused(source, exc)
            self._retry_offsets.finished(tp, msg.offset)
            return
        await self._until(not_before)
        pending.attempting = True
        try:
            delivery = self._retry_of(msg)
        except Exception as exc:
            await self._refused(source, exc)
        else:
            await self._guarded(source, delivery)
        self._retry_offsets.finished(tp, msg.offset)

    def _retry_of(self, msg: ConsumerRecord[bytes, bytes]) -> WebhookDelivery:
        check_size(msg.value, self.settings.max_message_bytes, "too-large", "the retry")
        try:
            return WebhookDelivery.model_validate_json(msg.value or b"")
        except (ValueError, RecursionError) as exc:  # ValidationError included
            raise Refused("invalid-retry", str(exc)) from exc

    async def _until(self, when: datetime) -> None:
        while True:
            wait = (when - self.clock()).total_seconds()
            if wait <= 0:
                return
            await asyncio.sleep(min(wait, MAX_SLEEP_S))

    async def _drain_retries(self, partitions: set[TopicPartition]) -> None:
        """Cancel the retries of ``partitions`` that are waiting (they stay uncommitted and are
        read again) and wait for those being attempted."""
        attempting = []
        for tp in partitions:
            for pending in list(self._pending.get(tp, {}).values()):
                if pending.task is None:
                    continue
                if pending.attempting:
                    attempting.append(pending.task)
                else:
                    pending.task.cancel()
        if attempting:
            _, late = await asyncio.wait(attempting, timeout=DRAIN_TIMEOUT_S)
            for task in late:
                task.cancel()
        # Let the cancelled tasks end (and their done callbacks run).
        tasks = [p.task for tp in partitions for p in self._pending.get(tp, {}).values() if p.task]
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def _commit_retries(
        self, consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]
    ) -> None:
        self._last_commit = time.monotonic()
        offsets = self._retry_offsets.to_commit(partitions)
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Harmless: the retries are read again (and those done, attempted again).
            log.info("webhooks: retry offset commit skipped (%s)", exc)
            return
        self._retry_offsets.committed_now(offsets)

    async def _retries_assigned(self, assigned: set[TopicPartition]) -> None:
        self._retry_assigned |= assigned
        consumer = self._retry_consumer
        coordinator = getattr(consumer, "_coordinator", None)
        if coordinator is None or not assigned:
            return
        try:
            # aiokafka's public committed() returns the offset only, not its metadata.
            committed = await coordinator.fetch_committed_offsets(list(assigned))
        except Exception as exc:  # only an optimisation: without it, done retries repeat
            log.warning("webhooks: committed retry offsets unknown (%s)", exc)
            return
        for tp, meta in committed.items():
            done = decode_done(meta.offset, meta.metadata)
            if done:
                self._retry_offsets.skip[tp] = done

    async def _retries_revoked(self, revoked: set[TopicPartition]) -> None:
        self._retry_assigned -= revoked
        await self._drain_retries(revoked)
        if self._retry_consumer is not None:
            await self._commit_retries(self._retry_consumer, revoked)
        self._retry_offsets.forget(revoked)

    # --- one delivery -----------------------------------------------------------------------

    async def _guarded(self, source: Source, delivery: WebhookDelivery) -> None:
        """One delivery's attempt through the per-input boundary: anything but an
        infrastructure failure makes a dead letter of ``source`` and returns."""
        try:
            await self._attempt(source, delivery)
        except asyncio.CancelledError:
            raise
        except KafkaError:
            raise  # publishing failed: infrastructure (refused records are Refused)
        except Exception as exc:
            await self._refused(source, exc, f"delivery {delivery.delivery_id!r}: ")

    def refusal_of(self, endpoint: WebhookEndpoint) -> str | None:
        """Why ``endpoint`` may not be called, found before any network: literal headers
        (dropped), a secretRef that is not configured, or that a per-message endpoint may not
        use for its host, an IP address the SSRF rules refuse. None: it may be called (its
        host name is checked when it is resolved)."""
        if endpoint.headers_dropped:
            return (
                "its literal headers were dropped (headers are secrets and are never kept on "
                "topics or in records): put them in DELIVERYTRACK_WEBHOOK_HEADERS under a "
                "secretRef"
            )
        host = yarl.URL(endpoint.url).raw_host or ""
        ref = endpoint.secret_ref
        settings = self.settings
        if ref is not None:
            if ref not in settings.webhook_secrets and ref not in settings.webhook_headers:
                return f"secretRef {ref!r} is not configured"
            if self._operator_endpoints.get(endpoint.id) != endpoint and not secret_allowed_for(
                host, settings.webhook_secret_hosts.get(ref, ())
            ):
                return (
                    f"secretRef {ref!r} may not be used by a per-message endpoint on host "
                    f"{host!r} (DELIVERYTRACK_WEBHOOK_SECRET_HOSTS)"
                )
        try:
            check_literal(self.allowed, host)
        except TargetRefused as exc:
            return str(exc)
        return None

    def _headers(self, delivery: WebhookDelivery, timestamp: int, body: bytes) -> CIMultiDict[str]:
        """The endpoint's header set (by its secretRef), then ours, which no header set can
        replace (header sets may not name them either)."""
        ref = delivery.endpoint.secret_ref
        headers: CIMultiDict[str] = CIMultiDict()
        if ref is not None:
            for name, value in self.settings.webhook_headers.get(ref, {}).items():
                headers[name] = value.get_secret_value()
        headers["Content-Type"] = "application/json"
        headers["X-DeliveryTrack-Event"] = header_value(delivery.event_type)
        headers["X-DeliveryTrack-Delivery"] = header_value(delivery.delivery_id)
        headers["X-DeliveryTrack-Attempt"] = str(delivery.attempt)
        headers[TIMESTAMP_HEADER] = str(timestamp)
        secret = self.settings.webhook_secrets.get(ref) if ref is not None else None
        if secret is not None:
            headers[SIGNATURE_HEADER] = sign(secret.get_secret_value(), timestamp, body)
        elif SIGNATURE_HEADER in headers:
            del headers[SIGNATURE_HEADER]
        return headers

    async def _post(self, delivery: WebhookDelivery) -> _Result:
        """One attempt: the answer's status code and a short, sanitised reason (at most
        ``MAX_RESPONSE_BYTES`` of it read, redirects not followed), or why it was refused."""
        endpoint = delivery.endpoint
        why = self.refusal_of(endpoint)
        if why is not None:
            return _Result(refused=why)
        body = orjson.dumps(delivery.payload)
        headers = self._headers(delivery, int(time.time()), body)
        started = time.monotonic()
        try:
            if self._session is None:
                raise RuntimeError("the dispatcher is not started")
            async with (
                self._limit,
                self._session.post(
                    endpoint.url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=endpoint.timeout_ms / 1000),
                ) as response,
            ):
                await response.content.read(MAX_RESPONSE_BYTES)
                status, reason = response.status, sanitised(response.reason or "", 64)
        except TargetRefused as exc:
            return _Result(refused=sanitised(str(exc)))
        except TimeoutError:
            return _Result(None, f"timeout after {endpoint.timeout_ms} ms", endpoint.timeout_ms)
        except aiohttp.ClientError as exc:
            error = sanitised(f"connection error: {type(exc).__name__}: {exc}")
            return _Result(None, error, int((time.monotonic() - started) * 1000))
        latency = int((time.monotonic() - started) * 1000)
        if 200 <= status < 300:
            return _Result(status, None, latency)
        error = f"HTTP {status} {reason}".rstrip()
        if 300 <= status < 400:
            error += " (redirects are not followed)"
        return _Result(status, error, latency)

    async def _attempt(self, source: Source, delivery: WebhookDelivery) -> None:
        """POST ``delivery`` and publish its outcome (and its retry or dead letter). Raises
        :class:`Refused` (or any exception) for this delivery, ``KafkaError`` for Kafka."""
        result = await self._post(delivery)
        status, error = result.status, result.error
        now = self.clock()
        attempted: dict[str, Any] = {
            "delivery_id": delivery.delivery_id,
            "endpoint_id": delivery.endpoint.id,
            "event_id": delivery.event_id,
            "message_id": delivery.message_id,
            "attempt": delivery.attempt,
            "http_status": status,
            "latency_ms": result.latency_ms,
            "attempted_at": now,
        }
        key = delivery.message_id.encode()
        outputs: Outputs = []
        if result.refused is not None:
            # A decision, not a failure: not retried, not a dead letter; visible here.
            outcome = WebhookAttempted(outcome="refused", error=result.refused, **attempted)
            log.info("webhooks: %s refused: %s", delivery.delivery_id[:200], result.refused)
        elif error is None:
            outcome = WebhookAttempted(outcome="delivered", **attempted)
        else:
            retry = next_attempt(delivery, now) if should_retry(status, error) else None
            if retry is not None:
                outcome = WebhookAttempted(
                    outcome="failed", error=error, next_attempt_at=retry.not_before, **attempted
                )
                value = encode(retry)
                limit = self.settings.max_message_bytes
                check_size(value, limit, "output-too-large", "the retry")
                outputs.append((self.topics.webhook_retries, key, value))
            else:
                outcome = WebhookAttempted(outcome="exhausted", error=error, **attempted)
                # The dead letter keeps the delivery (up to dead_letter_value_bytes; whole, it
                # can be put back on the retry topic).
                undelivered = Source(
                    source.topic, source.partition, source.offset, key, encode(delivery)
                )
                letter_key, letter = dead_letter(
                    undelivered,
                    "webhook-undeliverable",
                    f"{delivery.endpoint.url}: attempt {delivery.attempt}: {error}",
                    now,
                    self.settings.dead_letter_value_bytes,
                )
                outputs.append((self.topics.dead_letters, letter_key, letter))
        outputs.append((self.topics.webhook_deliveries, key, encode(outcome)))
        await self._publish(outputs)
        if outcome.outcome == "delivered":
            self.delivered += 1
        elif outcome.outcome == "failed":
            self.failed_attempts += 1
        elif outcome.outcome == "refused":
            self.refused += 1
        else:
            self.exhausted += 1
            self.dead_letters += 1

    async def _publish(self, outputs: Outputs) -> None:
        """Send ``outputs`` and wait for their acks. A record the producer or the broker
        refuses is this input's fault (:class:`Refused`); any other ``KafkaError`` is not."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("the dispatcher is not started")
        try:
            acks = [await producer.send(topic, value, key=key) for topic, key, value in outputs]
            await asyncio.gather(*acks)
        except REFUSED_RECORD_ERRORS as exc:
            raise published_refusal(exc) from exc

    async def _refused(self, source: Source, exc: BaseException, prefix: str = "") -> None:
        """Dead-letter ``source`` for ``exc`` (its reason, or processing-error with the
        traceback). Publishing the (bounded) dead letter can only fail for Kafka's sake: that
        error ends the loop, with the input not committed."""
        reason, detail = refusal(exc)
        if reason == "processing-error":
            log.error(
                "webhooks: processing failed on %s@%s:%s",
                source.topic,
                source.partition,
                source.offset,
                exc_info=exc,
            )
        detail = prefix + detail
        log.warning(
            "webhooks: dead letter %s@%s:%s: %s: %s",
            source.topic,
            source.partition,
            source.offset,
            reason,
            detail[:500],
        )
        key, value = dead_letter(
            source, reason, detail, self.clock(), self.settings.dead_letter_value_bytes
        )
        await self._publish([(self.topics.dead_letters, key, value)])
        self.dead_letters += 1


def _source(msg: ConsumerRecord[bytes, bytes]) -> Source:
    return Source(msg.topic, msg.partition, msg.offset, msg.key, msg.value)
