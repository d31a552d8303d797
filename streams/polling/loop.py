"""The poller's consumer: poll requests in, provider calls, observations out.

A plain aiokafka consumer (group ``<appId>.poller``) rather than a Faust agent (which delayed
requests in its delivery path before their provider call: bench/README.md). Here a request is
handed to its own task as soon as it is fetched; at most ``polling.concurrency`` provider calls
are in flight, and a fetch waits for a free slot (backpressure), so one slow provider holds only
the slots it occupies.

At least once: a request's offset is committed only after its observation is acknowledged by
Kafka, per partition up to the oldest request still in flight. A worker killed mid-call polls
those requests again; the repeated observation has the same ``eventId``
(``<messageId>:obs:<checkSeq>``) and the fold drops it. A request whose lease has already ended
is skipped without a call: the fold has re-issued it, or will, under a new ``checkSeq``.

Per-input boundary (streams/boundary.py): whatever goes wrong with ONE request (its size, its
decoding, the poller, encoding the observation, an observation the broker refuses, e.g. too
large) makes that request a dead letter with the reason and (a bounded copy of) its bytes, and
the loop goes on. An infrastructure failure while publishing (the broker unreachable past the
producer's own retries) gives the request up, logged and counted, rather than blocking its
partition's commits: the record's lease ends and the fold leases it again. Nothing that happens
to one request ends the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition

from deliverytrack.models.codec import decode_poll_request, encode
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
from deliverytrack.streams.kafka.clients import new_consumer
from deliverytrack.streams.kafka.membership import Rebalance
from deliverytrack.streams.kafka.offsets import PendingOffsets
from deliverytrack.streams.polling.poller import Poller
from deliverytrack.streams.supervision import TaskFailure
from deliverytrack.streams.topics import Topics

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 0.5
# A rebalance waits for the calls in flight: allow the provider timeout plus the observation's
# ack (and a margin) before the group gives up on this member.
DRAIN_MARGIN_S = 15.0


@dataclass(slots=True)
class PollLoopStats:
    requests: int = 0
    observations: int = 0
    skipped_expired: int = 0
    undecodable: int = 0
    dead_letters: int = 0
    given_up: int = 0


class PollLoop:
    def __init__(
        self,
        settings: Settings,
        poller: Poller,
        topics: Topics | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.poller = poller
        self.topics = topics or Topics.of(settings)
        self.clock = clock
        self.lease = timedelta(milliseconds=settings.polling.lease_ms)
        self.stats = PollLoopStats()
        self.assigned: set[TopicPartition] = set()
        self._slots = asyncio.Semaphore(settings.polling.concurrency)
        self._offsets = PendingOffsets()
        self._tasks: set[asyncio.Task[None]] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_commit = 0.0
        self._drain_timeout_s = settings.polling.provider_timeout_ms / 1000 + DRAIN_MARGIN_S
        self.failure = TaskFailure("poller")

    async def start(self, producer: AIOKafkaProducer) -> None:
        """Start consuming; observations go out through ``producer`` (the engine's)."""
        settings = self.settings
        self._consumer = new_consumer(
            settings,
            client_id=f"{settings.app_id}-poller",
            group_id=f"{settings.app_id}.poller",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=settings.consumer_session_timeout_ms,
            heartbeat_interval_ms=settings.consumer_heartbeat_interval_ms,
            max_poll_interval_ms=600_000,
            rebalance_timeout_ms=int(1000 * self._drain_timeout_s) + 5_000,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
        )
        self._consumer.subscribe(
            [self.topics.poll_requests], listener=Rebalance(self.on_revoked, self._on_assigned)
        )
        await self._consumer.start()
        self._runner = asyncio.create_task(self._run(self._consumer, producer), name="poll-loop")
        self.failure.watch(self._runner, lambda: self._stopping)

    async def stop(self) -> None:
        self._stopping = True
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        await self._drain()
        if self._consumer is not None:
            await self._commit(self.assigned)
            await self._consumer.stop()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def _run(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        while not self._stopping:
            try:
                batch = await consumer.getmany(
                    timeout_ms=200, max_records=self.settings.polling.concurrency
                )
            except KafkaError as exc:
                log.warning("poller: fetch failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            except Exception:
                if self._stopping:
                    return
                raise  # e.g. the consumer was stopped under us: self.failure reports it
            for tp, records in batch.items():
                for msg in records:
                    await self._slots.acquire()  # backpressure: a free call slot
                    if tp not in self.assigned:  # revoked while we waited
                        self._slots.release()
                        break
                    self._offsets.started(tp, msg.offset)
                    task = asyncio.create_task(self._handle(tp, msg, producer))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            if time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S:
                await self._commit(self.assigned)

    async def _handle(
        self, tp: TopicPartition, msg: ConsumerRecord[bytes, bytes], producer: AIOKafkaProducer
    ) -> None:
        cancelled = False
        try:
            self.stats.requests += 1
            await self._handle_one(msg, producer)
        except asyncio.CancelledError:
            cancelled = True  # not finished: its offset must not become committable
            raise
        except Exception as exc:  # the per-input boundary: this request, not the loop
            if isinstance(exc, Refused) and exc.reason == "publish-failed":
                self.stats.given_up += 1
                log.error(
                    "poller: request %s@%s:%s given up (the fold leases it again): %s",
                    tp.topic,
                    tp.partition,
                    msg.offset,
                    exc.detail,
                )
            else:
                await self._dead_letter(msg, exc, producer)
        finally:
            if not cancelled:
                self._offsets.finished(tp, msg.offset)
            self._slots.release()

    async def _handle_one(
        self, msg: ConsumerRecord[bytes, bytes], producer: AIOKafkaProducer
    ) -> None:
        """One request's whole work; raises for this request (see :meth:`_handle`)."""
        check_size(msg.value, self.settings.max_input_bytes, "too-large", "the value")
        try:
            request = decode_poll_request(msg.value)
        except Exception:
            self.stats.undecodable += 1
            raise
        if request.issued_at + self.lease < self.clock():
            self.stats.skipped_expired += 1
            return
        observed = await self.poller.poll(request)
        value = encode(observed)
        check_size(value, self.settings.max_message_bytes, "output-too-large", "the observation")
        try:
            ack = await producer.send(self.topics.observations, value=value, key=msg.key)
            await ack
        except REFUSED_RECORD_ERRORS as exc:
            raise published_refusal(exc) from exc
        except KafkaError as exc:  # not this request's fault: see the module docstring
            raise Refused("publish-failed", f"{type(exc).__name__}: {exc}") from exc
        self.stats.observations += 1

    async def _dead_letter(
        self, msg: ConsumerRecord[bytes, bytes], exc: Exception, producer: AIOKafkaProducer
    ) -> None:
        """Park ``msg`` in dead-letters with the reason ``exc`` gives. If even that cannot be
        published (the broker is unreachable), it is logged: the fold leases the record again."""
        reason, detail = refusal(exc)
        source = Source(msg.topic, msg.partition, msg.offset, msg.key, msg.value)
        log.warning(
            "poller: dead letter %s@%s:%s: %s: %s",
            msg.topic,
            msg.partition,
            msg.offset,
            reason,
            detail[:500],
        )
        try:
            key, value = dead_letter(
                source, reason, detail, self.clock(), self.settings.dead_letter_value_bytes
            )
            ack = await producer.send(self.topics.dead_letters, value=value, key=key)
            await ack
            self.stats.dead_letters += 1
        except asyncio.CancelledError:
            raise
        except Exception:
            self.stats.given_up += 1
            log.exception(
                "poller: the dead letter of %s@%s:%s could not be published (%s: %s)",
                msg.topic,
                msg.partition,
                msg.offset,
                reason,
                detail[:500],
            )

    async def _drain(self) -> None:
        """Wait for the calls in flight (each is bounded by the provider timeout). Not by
        ``gather``: cancelling the waiter must not cancel the calls."""
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=self._drain_timeout_s)
            if pending:
                log.warning("poller: %d calls still running after the drain timeout", len(pending))

    async def _commit(self, partitions: Iterable[TopicPartition]) -> None:
        self._last_commit = time.monotonic()
        offsets = self._offsets.committable(partitions)
        if not offsets or self._consumer is None:
            return
        try:
            await self._consumer.commit(
                {tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()}
            )
        except (CommitFailedError, KafkaError) as exc:
            # Harmless: the requests are polled again, and their observations deduplicated.
            log.info("poller: offset commit skipped (%s)", exc)
            return
        self._offsets.committed.update(offsets)

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.assigned |= assigned

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Finish the calls in flight and commit, before another worker takes the partitions."""
        self.assigned -= revoked  # the fetch loop starts nothing more for them
        await self._drain()
        await self._commit(revoked)
        self._offsets.forget(revoked)
