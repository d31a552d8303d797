"""Python client: publish events with the right keys and schemas, read through the query API,
follow the status-change topic.

Writes are Kafka events (never in-place changes); reads go to any worker's HTTP API (its API
listener), which routes and gathers across workers, with a bearer token: ``token=``, else
``DELIVERYTRACK_API_TOKEN``, else the first of the settings' ``api_tokens``. The table trails
the topics, so a read right after a write may not see it yet (use
:meth:`DeliveryTrackClient.wait_for`)::

    async with DeliveryTrackClient("http://127.0.0.1:6066", settings, token=token) as client:
        await client.record_send(SendRecorded(...))
        record = await client.wait_for("msg-1")
        print(await client.count_records({"status": ["DELIVERED"]}))
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition
from pydantic import BaseModel, SecretStr

from deliverytrack.models.codec import decode_record, encode
from deliverytrack.models.common import utc_text
from deliverytrack.models.enums import StatusSource, TrackingStatus
from deliverytrack.models.events import (
    CancelMessage,
    ProviderReportReceived,
    SendRecorded,
    StatusChanged,
    StopTracking,
    UpdateStatus,
    provider_key,
)
from deliverytrack.models.records import StatusHistoryEntry, TrackingRecord
from deliverytrack.models.settings import Settings
from deliverytrack.streams.kafka.clients import new_consumer, new_producer, refresh_metadata
from deliverytrack.streams.topics import Topics
from deliverytrack.tables.query import RecordFilter

log = logging.getLogger(__name__)

FilterLike = RecordFilter | Mapping[str, Any] | None

TOKEN_ENV = "DELIVERYTRACK_API_TOKEN"  # noqa: S105 - a variable name, not a secret
"""The token a client sends when none is given (the worker's own ``DELIVERYTRACK_API_TOKENS``
are the fallback, for tools run beside a worker)."""


def resolve_token(token: str | SecretStr | None, settings: Settings) -> SecretStr | None:
    """``token`` if given, else ``$DELIVERYTRACK_API_TOKEN``, else the settings' first API
    token (then PII token); None when there is none (a worker without tokens, on loopback)."""
    if isinstance(token, SecretStr):
        return token
    if token:
        return SecretStr(token)
    from_env = os.environ.get(TOKEN_ENV, "").strip()
    if from_env:
        return SecretStr(from_env)
    configured = (*settings.api_tokens, *settings.api_pii_tokens)
    return configured[0] if configured else None


def auth_headers(token: SecretStr | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token.get_secret_value()}"}


class QueryFailed(Exception):
    """The query API refused or could not answer; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def filter_params(flt: FilterLike) -> list[tuple[str, str]] | None:
    """Query parameters for a filter (camelCase or snake_case keys, or a RecordFilter);
    None when the filter can match nothing (an empty list), so callers answer locally."""
    if flt is None:
        return []
    model = flt if isinstance(flt, RecordFilter) else RecordFilter.model_validate(dict(flt))
    if model.is_empty_match():
        return None
    params: list[tuple[str, str]] = []
    for name, value in model.model_dump(mode="json", by_alias=True, exclude_none=True).items():
        if isinstance(value, list):
            params.extend((name, str(item)) for item in value)
        else:
            params.append((name, str(value)))
    return params


def read_answer(status: int, reason: str | None, body: bytes) -> Any:
    """The JSON answer, or QueryFailed with the worker's reason (JSON or plain text)."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = body.decode(errors="replace")
    if status != 200:
        message = data.get("error") if isinstance(data, dict) else data
        raise QueryFailed(status, str(message or reason or ""))
    return data


ROUTE_NAMES = frozenset({"count", "count-by", "due"})
"""messageIds that ``/records/<messageId>`` cannot name (other routes answer there): their
record is read with the list's ``messageId`` filter (:func:`record_query`)."""


def record_query(message_id: str) -> tuple[str, list[tuple[str, str]]] | None:
    """For a messageId in :data:`ROUTE_NAMES`: the list query that finds its record."""
    if message_id not in ROUTE_NAMES:
        return None
    return "/records", [("messageId", message_id), ("limit", "1")]


def record_path(message_id: str, suffix: str = "") -> str:
    """``/records/<messageId>``, the id quoted (it may contain ``/``, ``?``, ``%``...)."""
    return f"/records/{quote(message_id, safe='')}{suffix}"


def _time(value: datetime | int | str) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime: give a timezone (e.g. datetime.now(UTC))")
        return utc_text(value)
    return str(value)


class DeliveryTrackClient:
    """One client for writes (Kafka producer) and reads (HTTP query API)."""

    def __init__(
        self,
        base_url: str,
        settings: Settings | None = None,
        *,
        timeout_s: float = 30.0,
        token: str | SecretStr | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.settings = settings or Settings()
        self._token = resolve_token(token, self.settings)
        self.topics = Topics.of(self.settings)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> DeliveryTrackClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    # --- writes -----------------------------------------------------------------------------

    async def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = new_producer(
                self.settings,
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
            )
            await producer.start()
            self._producer = producer
        return self._producer

    async def publish(self, topic: str, key: str, event: BaseModel) -> None:
        """Publish one event and wait for the broker's ack."""
        producer = await self.producer()
        await producer.send_and_wait(topic, encode(event), key=key.encode())

    async def record_send(self, event: SendRecorded) -> None:
        await self.publish(self.topics.send_results, event.message_id, event)

    async def publish_report(self, report: ProviderReportReceived) -> None:
        """A provider delivery report, already normalised (what the webhook ingress does)."""
        key = provider_key(report.provider_id, report.provider_message_id)
        await self.publish(self.topics.provider_webhooks, key, report)

    async def update_status(
        self,
        message_id: str,
        status: TrackingStatus | str,
        *,
        source: StatusSource | str = StatusSource.MANUAL,
        at: datetime | None = None,
        event_id: str | None = None,
        **fields: Any,
    ) -> UpdateStatus:
        command = UpdateStatus(
            event_id=event_id or f"cmd-{uuid.uuid4().hex}",
            message_id=message_id,
            status=TrackingStatus(status),
            source=StatusSource(source),
            at=at or datetime.now(UTC),
            **fields,
        )
        await self.publish(self.topics.commands, message_id, command)
        return command

    async def cancel(self, message_id: str, reason: str | None = None) -> None:
        command = CancelMessage(
            event_id=f"cmd-{uuid.uuid4().hex}",
            message_id=message_id,
            at=datetime.now(UTC),
            reason=reason,
        )
        await self.publish(self.topics.commands, message_id, command)

    async def stop_tracking(self, message_id: str, reason: str | None = None) -> None:
        command = StopTracking(
            event_id=f"cmd-{uuid.uuid4().hex}",
            message_id=message_id,
            at=datetime.now(UTC),
            reason=reason,
        )
        await self.publish(self.topics.commands, message_id, command)

    async def purge(self, message_id: str, reason: str = "cleanup") -> None:
        """Delete a record (the fold tombstones it; aggregates follow)."""
        producer = await self.producer()
        value = orjson.dumps(
            {
                "eventType": "purge",
                "schemaVersion": 1,
                "eventId": f"purge-{uuid.uuid4().hex}",
                "messageId": message_id,
                "at": utc_text(datetime.now(UTC)),
                "reason": reason,
            }
        )
        await producer.send_and_wait(self.topics.commands, value, key=message_id.encode())

    # --- reads ------------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _get(self, path: str, params: Iterable[tuple[str, str]] = ()) -> Any:
        async with self._http().get(
            self.base_url + path, params=list(params), headers=auth_headers(self._token)
        ) as response:
            return read_answer(response.status, response.reason, await response.read())

    async def _post(self, url: str) -> Any:
        async with self._http().post(url, headers=auth_headers(self._token)) as response:
            return read_answer(response.status, response.reason, await response.read())

    async def get_record(self, message_id: str) -> TrackingRecord | None:
        if (query := record_query(message_id)) is not None:
            found = (await self._get(*query))["records"]
            return decode_record(orjson.dumps(found[0])) if found else None
        try:
            data = await self._get(record_path(message_id))
        except QueryFailed as exc:
            if exc.status == 404:
                return None
            raise
        return decode_record(orjson.dumps(data))

    async def history(self, message_id: str) -> list[StatusHistoryEntry]:
        data = await self._get(record_path(message_id, "/history"))
        return [StatusHistoryEntry.model_validate(item) for item in data["history"]]

    async def list_records(
        self,
        flt: FilterLike = None,
        *,
        limit: int = 100,
        offset: int = 0,
        order_by: str = "requestedAt",
        order_direction: str = "desc",
        after: str | None = None,
    ) -> list[TrackingRecord]:
        records, _ = await self.list_page(
            flt,
            limit=limit,
            offset=offset,
            order_by=order_by,
            order_direction=order_direction,
            after=after,
        )
        return records

    async def list_page(
        self,
        flt: FilterLike = None,
        *,
        limit: int = 100,
        offset: int = 0,
        order_by: str = "requestedAt",
        order_direction: str = "desc",
        after: str | None = None,
    ) -> tuple[list[TrackingRecord], str | None]:
        """One page and the ``after`` of the next one (None: this was the last page).
        ``offset + limit`` is at most 10,000: page on with ``after`` (keyset)."""
        params = filter_params(flt)
        if params is None or limit <= 0:
            return [], None
        params += [
            ("limit", str(int(limit))),
            ("offset", str(int(offset))),
            ("orderBy", order_by),
            ("orderDirection", order_direction),
        ]
        if after is not None:
            params.append(("after", after))
        data = await self._get("/records", params)
        records = [decode_record(orjson.dumps(item)) for item in data["records"]]
        return records, data.get("nextAfter")

    async def iter_records(
        self,
        flt: FilterLike = None,
        *,
        order_by: str = "requestedAt",
        order_direction: str = "asc",
        page_size: int = 1_000,
    ) -> AsyncGenerator[TrackingRecord, None]:
        """Every matching record, page by page (keyset paging: each page costs the same,
        however deep). Oldest first by default, so records added meanwhile come last."""
        after: str | None = None
        while True:
            records, after = await self.list_page(
                flt,
                limit=page_size,
                order_by=order_by,
                order_direction=order_direction,
                after=after,
            )
            for record in records:
                yield record
            if after is None:
                return

    async def count_records(self, flt: FilterLike = None) -> int:
        params = filter_params(flt)
        if params is None:
            return 0
        return int((await self._get("/records/count", params))["count"])

    async def count_by(
        self, flt: FilterLike, group_by: str | Iterable[str]
    ) -> list[dict[str, Any]]:
        if isinstance(group_by, str):
            group_by = group_by.split(",")
        fields = [name.strip() for name in group_by if name.strip()]
        params = filter_params(flt)
        if params is None or not fields:
            return []
        params.append(("groupBy", ",".join(fields)))
        rows: list[dict[str, Any]] = (await self._get("/records/count-by", params))["rows"]
        return rows

    async def list_due(self, now: datetime | None = None, limit: int = 100) -> list[TrackingRecord]:
        if limit <= 0:
            return []
        params = [("now", _time(now or datetime.now(UTC))), ("limit", str(int(limit)))]
        data = await self._get("/records/due", params)
        return [decode_record(orjson.dumps(item)) for item in data["records"]]

    async def stats(
        self,
        start: datetime | int | str | None = None,
        end: datetime | int | str | None = None,
        **dims: str | list[str],
    ) -> dict[str, Any]:
        params: list[tuple[str, str]] = []
        if start is not None:
            params.append(("from", _time(start)))
        if end is not None:
            params.append(("to", _time(end)))
        for name, value in dims.items():
            for item in [value] if isinstance(value, str) else value:
                params.append((name, item))
        result: dict[str, Any] = await self._get("/stats", params)
        return result

    async def summary(
        self,
        start: datetime | int | str,
        end: datetime | int | str,
        *,
        include_by_provider_id: bool = False,
        include_by_type: bool = False,
        **dims: str | list[str],
    ) -> dict[str, Any]:
        """k-msg analytics ``getSummary`` over ``requestedAt`` in [start, end] (inclusive);
        ``dims``: ``providerId``/``type`` filters (``GET /stats/summary``)."""
        params = [("from", _time(start)), ("to", _time(end))]
        for name, value in dims.items():
            params.extend((name, item) for item in ([value] if isinstance(value, str) else value))
        if include_by_provider_id:
            params.append(("includeByProviderId", "true"))
        if include_by_type:
            params.append(("includeByType", "true"))
        result: dict[str, Any] = await self._get("/stats/summary", params)
        return result

    async def health(self) -> dict[str, Any]:
        """The worker's /health (its counters and the workers' URLs need the token)."""
        async with self._http().get(
            self.base_url + "/health", headers=auth_headers(self._token)
        ) as response:
            result: dict[str, Any] = orjson.loads(await response.read())
            return result

    async def scan_due_now(self) -> int:
        """Ask every worker to scan its due index now (k-msg ``runOnce``); returns the number
        of due checks emitted. Polling then runs as always, through the topics."""
        owners = (await self.health()).get("owners") or {}
        urls = sorted(set(owners.values())) or [self.base_url]
        total = 0
        for url in urls:
            total += int((await self._post(f"{url}/admin/due-scan"))["dueChecks"])
        return total

    async def wait_for(
        self,
        message_id: str,
        until: Callable[[TrackingRecord], bool] = lambda record: True,
        timeout: float = 30.0,
    ) -> TrackingRecord:
        """Poll the query API until the record exists and ``until(record)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            record = await self.get_record(message_id)
            if record is not None and until(record):
                return record
            if time.monotonic() > deadline:
                raise TimeoutError(f"{message_id}: not as expected after {timeout}s: {record}")
            await asyncio.sleep(0.1)


async def follow_status_changes(
    settings: Settings,
    *,
    group_id: str | None = None,
    from_beginning: bool = False,
    on_ready: Callable[[], None] | None = None,
) -> AsyncGenerator[StatusChanged, None]:
    """Status changes as they are published. With a ``group_id`` the position is committed
    (a restart resumes); without one every partition is read from the end (or the beginning)
    and ``on_ready`` is called once the start positions are fixed, so nothing published after
    it is missed. The topic is at-least-once: drop repeats by ``eventId``."""
    topics = Topics.of(settings)
    consumer = new_consumer(
        settings,
        group_id=group_id,
        enable_auto_commit=group_id is not None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        if group_id is None:
            partitions = consumer.partitions_for_topic(topics.status_changes)
            if not partitions:
                await refresh_metadata(consumer)
                partitions = consumer.partitions_for_topic(topics.status_changes) or set()
            tps = [TopicPartition(topics.status_changes, p) for p in sorted(partitions)]
            consumer.assign(tps)
            if from_beginning:
                await consumer.seek_to_beginning(*tps)
            else:
                await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)
        else:
            consumer.subscribe([topics.status_changes])
        if on_ready is not None:
            on_ready()
        async for message in consumer:
            if message.value is None:
                continue
            try:
                change = StatusChanged.model_validate_json(message.value)
            except ValueError as exc:  # ValidationError included: one value, not the stream
                log.warning(
                    "skipped %s@%s:%s: not a status change: %s",
                    message.topic,
                    message.partition,
                    message.offset,
                    str(exc)[:500],
                )
                continue
            yield change
    finally:
        await consumer.stop()
