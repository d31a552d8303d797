"""k-msg's tracking API in Python: ``DeliveryTrackingStore``, ``DeliveryTrackingService`` and
``DeliveryTracker`` (ARCHITECTURE.md section 8), with the seeds' methods in snake_case.

They are thin: every write becomes a published event (a send result or a command), never an
in-place change; every read goes to the query API. Because the table trails the topics, a read
right after a write may not see it yet; k-msg's stores answered synchronously. Where k-msg
returns a value computed by the write (``updateStatus`` -> bool), the facade decides from the
current record with the same rule the fold applies, so the answer matches what the fold will do
unless another writer gets there first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from deliverytrack.models.common import ErrorInfo
from deliverytrack.models.enums import (
    MessageType,
    StatusSource,
    TrackingStatus,
    is_terminal,
)
from deliverytrack.models.events import SendRecorded, SendWarning, StatusChanged
from deliverytrack.models.outbound import WebhookEndpoint
from deliverytrack.models.records import TrackingRecord
from deliverytrack.models.settings import Settings
from deliverytrack.streams.api.client import DeliveryTrackClient, FilterLike, follow_status_changes
from deliverytrack.tables.fold import can_transition
from deliverytrack.tables.query import MAX_LIMIT

log = logging.getLogger(__name__)
S = TrackingStatus

Listener = Callable[..., Any]

_PATCHABLE_STATUS_FIELDS = {
    "status",
    "provider_status_code",
    "provider_status_message",
    "sent_at",
    "delivered_at",
    "failed_at",
    "clicked_at",
    "last_error",
}


def _snake(name: str) -> str:
    out = "".join("_" + c.lower() if c.isupper() else c for c in name)
    return "from_" if out == "from" else out


def _floored_limit(limit: Any) -> int:
    """k-msg's ``Math.floor(limit)``, with 0 for what is not a finite number."""
    if isinstance(limit, bool) or not isinstance(limit, int | float):
        return 0
    if not math.isfinite(limit):
        return 0
    return math.floor(limit)


def _error_info(error: Any) -> tuple[ErrorInfo | None, Any]:
    """k-msg's ``details.error`` ``{code, message, details?}`` (a mapping, an ``ErrorInfo`` or
    an exception-like object with ``code`` and ``message``) as the record's ``lastError``,
    and the error's own ``details`` (kept in the history entry)."""
    if error is None or isinstance(error, ErrorInfo):
        return error, None
    if isinstance(error, Mapping):
        code, message, extra = error.get("code"), error.get("message"), error.get("details")
    else:
        code, message, extra = getattr(error, "code", None), getattr(error, "message", None), None
    if not code:
        raise ValueError(f"error: a code is required (k-msg's {{code, message}}), got {error!r}")
    text = "" if message is None else str(message)
    return ErrorInfo(code=str(code), message=text), extra


# --- DeliveryTrackingStore --------------------------------------------------------------------


class DeliveryTrackingStore:
    """k-msg ``DeliveryTrackingStore`` (init, upsert, get, list_due, list_records,
    count_records, count_by, patch, close) over the topics and the query API."""

    def __init__(self, client: DeliveryTrackClient) -> None:
        self.client = client

    async def init(self) -> None:
        await self.client.producer()
        await self.client.health()

    async def upsert(self, record: TrackingRecord) -> None:
        """Publish the record as a send result (first one wins, like the fold's recordSend);
        a status beyond the initial one follows as a manual update."""
        await self.client.record_send(
            SendRecorded(
                event_id=f"upsert-{record.message_id}",
                message_id=record.message_id,
                provider_id=record.provider_id,
                provider_message_id=record.provider_message_id or None,
                type=record.type,
                to=record.to,
                from_=record.from_,
                requested_at=record.requested_at,
                scheduled_at=record.scheduled_at,
                recorded_at=record.status_updated_at,
                metadata=record.metadata,
                webhooks=record.webhooks,
            )
        )
        if record.status not in (TrackingStatus.SENT, TrackingStatus.PENDING):
            await self.client.update_status(
                record.message_id,
                record.status,
                at=record.status_updated_at,
                event_id=f"upsert-{record.message_id}:{record.status.value}",
                provider_status_code=record.provider_status_code,
                provider_status_message=record.provider_status_message,
                sent_at=record.sent_at,
                delivered_at=record.delivered_at,
                failed_at=record.failed_at,
            )

    async def get(self, message_id: str) -> TrackingRecord | None:
        return await self.client.get_record(message_id)

    async def list_due(self, now: datetime, limit: float) -> list[TrackingRecord]:
        """k-msg listDue: at most ``limit`` due records, oldest first. ``limit`` is floored;
        0, negative or non-finite (NaN, infinity) gives [] (kmsg-behaviour.md 4.3). More than
        the query API's maximum (10,000) gives at most that many."""
        wanted = _floored_limit(limit)
        if wanted <= 0:
            return []
        return await self.client.list_due(now, min(wanted, MAX_LIMIT))

    async def list_records(
        self,
        options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[TrackingRecord]:
        """``options``: k-msg's listRecords options: filter keys plus limit (required),
        offset, orderBy, orderDirection (camelCase or snake_case)."""
        opts = {_snake(k): v for k, v in {**(options or {}), **kwargs}.items()}
        if "limit" not in opts:
            raise ValueError("list_records: limit is required (k-msg listRecords)")
        limit = int(opts.pop("limit"))
        offset = int(opts.pop("offset", 0))
        order_by = opts.pop("order_by", "requestedAt")
        direction = opts.pop("order_direction", "desc")
        return await self.client.list_records(
            opts, limit=limit, offset=offset, order_by=order_by, order_direction=direction
        )

    async def count_records(self, flt: FilterLike = None) -> int:
        return await self.client.count_records(flt)

    async def count_by(self, flt: FilterLike, group_by: Iterable[str]) -> list[dict[str, Any]]:
        return await self.client.count_by(flt, group_by)

    async def patch(self, message_id: str, partial: Mapping[str, Any]) -> None:
        """A status patch becomes a manual UpdateStatus command. k-msg: a patch for a missing
        id is a silent no-op; a terminal record never regresses (the fold enforces it)."""
        fields = {_snake(k): v for k, v in partial.items() if _snake(k) != "message_id"}
        unsupported = set(fields) - _PATCHABLE_STATUS_FIELDS
        if unsupported:
            raise ValueError(
                f"patch: {sorted(unsupported)} cannot be patched: records change only through "
                f"events; patchable: {sorted(_PATCHABLE_STATUS_FIELDS)}"
            )
        if "status" not in fields:
            raise ValueError("patch: a status is required (the update is a status command)")
        if await self.client.get_record(message_id) is None:
            return
        status = TrackingStatus(fields.pop("status"))
        error = fields.pop("last_error", None)
        await self.client.update_status(message_id, status, error=error, **fields)

    async def close(self) -> None:
        await self.client.close()


# --- DeliveryTrackingService ------------------------------------------------------------------


class DeliveryTrackingService:
    """k-msg ``DeliveryTrackingService``: record sends; reads; ``run_once`` asks the workers
    to scan for due records now (polling itself always runs in the workers)."""

    def __init__(self, client: DeliveryTrackClient) -> None:
        self.client = client
        self.store = DeliveryTrackingStore(client)
        self._started = False

    async def init(self) -> None:
        await self.store.init()

    async def start(self) -> None:
        await self.init()
        self._started = True

    async def stop(self) -> None:
        self._started = False

    async def close(self) -> None:
        await self.stop()
        await self.client.close()

    async def record_send(self, context: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        """k-msg ``recordSend(context, result)``: ``context`` is the hook context
        (messageId, options {type, to, from, options {scheduledAt}}, timestamp in epoch ms,
        providerId); ``result`` the SendResult (messageId, providerId, providerMessageId,
        type, to, warnings)."""
        options = dict(context.get("options") or {})
        inner = dict(options.get("options") or {})
        # k-msg: the hook context's messageId is the correlation id.
        message_id = str(context.get("messageId") or result["messageId"])
        requested = context.get("timestamp")
        if isinstance(requested, datetime):
            requested_at = requested
        elif isinstance(requested, int | float):
            requested_at = datetime.fromtimestamp(requested / 1000, UTC)
        else:
            requested_at = datetime.now(UTC)
        provider_id = result.get("providerId") or context.get("providerId")
        to = result.get("to") or options.get("to")
        if not provider_id or not to:
            raise ValueError("record_send: providerId and to are required (result or context)")
        scheduled = inner.get("scheduledAt")
        if isinstance(scheduled, int | float):
            scheduled = datetime.fromtimestamp(scheduled / 1000, UTC)
        metadata: dict[str, Any] = {}
        if inner.get("customFields"):
            metadata["customFields"] = inner["customFields"]
        provider_message_id = result.get("providerMessageId")
        if provider_message_id is not None and not isinstance(provider_message_id, str):
            # k-msg recordSend: a providerMessageId that is not a string counts as "", so the
            # record is UNKNOWN with MISSING_PROVIDER_MESSAGE_ID (the send-results topic refuses
            # it instead: a dead letter naming the field).
            log.warning(
                "record_send %s: providerMessageId is a %s, not a string: recorded as missing",
                message_id,
                type(provider_message_id).__name__,
            )
            provider_message_id = None
        await self.client.record_send(
            SendRecorded(
                event_id=f"send-{message_id}",
                message_id=message_id,
                provider_id=str(provider_id),
                provider_message_id=provider_message_id,
                type=MessageType(result.get("type") or options.get("type") or "SMS"),
                to=str(to),
                from_=options.get("from"),
                requested_at=requested_at,
                scheduled_at=scheduled,
                # k-msg: statusUpdatedAt is when the send result is recorded, not requestedAt.
                recorded_at=datetime.now(UTC),
                metadata=metadata or None,
                failover=options.get("failover"),
                warnings=tuple(SendWarning.model_validate(w) for w in result.get("warnings") or ()),
            )
        )

    async def get_record(self, message_id: str) -> TrackingRecord | None:
        return await self.store.get(message_id)

    async def list_records(self, options: Mapping[str, Any]) -> list[TrackingRecord]:
        return await self.store.list_records(options)

    async def count_records(self, flt: FilterLike = None) -> int:
        return await self.store.count_records(flt)

    async def count_by(self, flt: FilterLike, group_by: Iterable[str]) -> list[dict[str, Any]]:
        return await self.store.count_by(flt, group_by)

    async def run_once(self) -> int:
        """Due checks emitted by all workers' scans (k-msg runOnce reconciles inline)."""
        return await self.client.scan_due_now()


# --- DeliveryTrackingAnalyticsService ---------------------------------------------------------


class DeliveryTrackingAnalyticsService:
    """k-msg analytics ``DeliveryTrackingAnalyticsService`` (kmsg-behaviour.md 12): the
    summary of a ``requestedAt`` period, computed by the workers from their aggregates
    (``GET /stats/summary``), not by counting records."""

    def __init__(self, client: DeliveryTrackClient) -> None:
        self.client = client

    async def init(self) -> None:
        await self.client.health()

    async def get_summary(
        self, query: Mapping[str, Any], options: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """k-msg ``getSummary({requestedAt: {start, end}, providerId?, type?},
        {includeByProviderId?, includeByType?})``: ``total``, ``byStatus`` (every status,
        zero-filled), ``rates`` {deliveredOfTotalPct, failedOfTotalPct,
        deliveredOfFinalizedPct} and, on request, ``byProviderId`` / ``byType`` with the same
        breakdown per key. ``start``/``end`` are timezone-aware datetimes, inclusive."""
        requested = query.get("requestedAt") or query.get("requested_at") or {}
        start, end = requested.get("start"), requested.get("end")
        if not isinstance(start, datetime):
            raise ValueError("query.requestedAt.start must be a datetime")
        if not isinstance(end, datetime):
            raise ValueError("query.requestedAt.end must be a datetime")
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("query.requestedAt: give timezone-aware datetimes")
        if start > end:
            raise ValueError("query.requestedAt.start must be <= query.requestedAt.end")
        dims: dict[str, str | list[str]] = {}
        for name in ("providerId", "type"):
            value = query.get(name) or query.get(_snake(name))
            if value:
                is_one = isinstance(value, str)
                dims[name] = str(value) if is_one else [str(item) for item in value]
        opts = {_snake(k): v for k, v in (options or {}).items()}
        return await self.client.summary(
            start,
            end,
            include_by_provider_id=bool(opts.get("include_by_provider_id")),
            include_by_type=bool(opts.get("include_by_type")),
            **dims,
        )


# --- DeliveryTracker --------------------------------------------------------------------------


_EVENT_TYPE = {
    TrackingStatus.QUEUED: "message.queued",
    TrackingStatus.PENDING: "message.queued",
    TrackingStatus.SENDING: "message.sending",
    TrackingStatus.SENT: "message.sent",
    TrackingStatus.DELIVERED: "message.delivered",
    TrackingStatus.CLICKED: "message.clicked",
    TrackingStatus.FAILED: "message.failed",
    TrackingStatus.CANCELLED: "message.cancelled",
    TrackingStatus.UNKNOWN: "message.unknown",
}


class DeliveryTracker:
    """k-msg's old in-memory ``DeliveryTracker``, event-sourced. Emits ``tracker:started``,
    ``tracker:stopped``, ``tracking:started``, ``status:updated``, ``tracking:completed``,
    ``tracking:stopped`` and ``cleanup:completed``; the status events come from the
    status-change topic (so they report what the fold applied, from any writer)."""

    def __init__(self, client: DeliveryTrackClient, settings: Settings | None = None) -> None:
        self.client = client
        self.settings = settings or client.settings
        self._listeners: dict[str, list[tuple[Listener, bool]]] = defaultdict(list)
        self._task: asyncio.Task[None] | None = None
        self._seen: set[str] = set()

    # --- events (k-msg EventEmitter) --------------------------------------------------------

    def on(self, event: str, listener: Listener) -> DeliveryTracker:
        self._listeners[event].append((listener, False))
        return self

    add_listener = on

    def once(self, event: str, listener: Listener) -> DeliveryTracker:
        self._listeners[event].append((listener, True))
        return self

    def off(self, event: str, listener: Listener) -> DeliveryTracker:
        self._listeners[event] = [(f, o) for f, o in self._listeners[event] if f is not listener]
        return self

    remove_listener = off

    def emit(self, event: str, *args: Any) -> bool:
        listeners = self._listeners.get(event) or []
        if not listeners:
            return False
        self._listeners[event] = [(f, o) for f, o in listeners if not o]
        for listener, _ in listeners:
            try:
                listener(*args)
            except Exception:  # a listener's bug must not stop the tracker
                log.exception("listener for %s failed", event)
        return True

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        ready = asyncio.Event()
        task = asyncio.create_task(self._follow(ready), name="delivery-tracker")
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            waiter.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            raise RuntimeError("DeliveryTracker: cannot follow the status-change topic")
        self._task = task
        self.emit("tracker:started")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self.emit("tracker:stopped")

    async def _follow(self, ready: asyncio.Event) -> None:
        stream = follow_status_changes(self.settings, on_ready=ready.set)
        try:
            async for change in stream:
                self._dispatch(change)
        finally:
            await stream.aclose()

    def _dispatch(self, change: StatusChanged) -> None:
        if change.event_id in self._seen:  # at-least-once topic: drop repeats
            return
        self._seen.add(change.event_id)
        if len(self._seen) > 100_000:
            self._seen.clear()
        event: dict[str, Any] = {
            "id": change.event_id,
            "type": _EVENT_TYPE[change.status],
            "timestamp": change.changed_at,
            "data": {
                "messageId": change.message_id,
                "previousStatus": change.previous_status,
                "currentStatus": change.status,
                "source": change.source.value,
                "record": change.record,
            },
        }
        if change.changes is not None:  # DELIVERYTRACK_STATUS_CHANGE_RECORD=changes: no record
            event["data"]["changes"] = change.changes
        if change.previous_status is None:
            self.emit("tracking:started", event)
        else:
            self.emit("status:updated", event)
        if is_terminal(change.status):
            data = {**event["data"], "trackingCompleted": True}
            self.emit("tracking:completed", {**event, "data": data})

    # --- writes -----------------------------------------------------------------------------

    async def track_message(
        self,
        message_id: str,
        phone_number: str,
        template_id: str | None,
        provider: str,
        *,
        webhooks: Iterable[WebhookEndpoint | Mapping[str, Any]] = (),
        metadata: Mapping[str, Any] | None = None,
        initial_status: TrackingStatus | str = TrackingStatus.QUEUED,
        message_type: MessageType | str = MessageType.ALIMTALK,
        provider_message_id: str | None = None,
    ) -> None:
        meta = dict(metadata or {})
        if template_id:
            meta["templateId"] = template_id
        await self.client.record_send(
            SendRecorded(
                event_id=f"track-{message_id}",
                message_id=message_id,
                provider_id=provider,
                provider_message_id=provider_message_id,
                type=MessageType(message_type),
                to=phone_number,
                requested_at=datetime.now(UTC),
                metadata=meta or None,
                webhooks=tuple(WebhookEndpoint.model_validate(w) for w in webhooks),
                initial_status=TrackingStatus(initial_status),
            )
        )

    async def update_status(
        self,
        message_id: str,
        status: TrackingStatus | str,
        details: Mapping[str, Any] | None = None,
        *,
        error: Any = None,
    ) -> bool:
        """False for an unknown id or a transition the fold refuses (k-msg's rule, minus its
        FAILED -> SENT quirk); otherwise the command is published and True returned.

        ``details`` as in k-msg: sentAt, deliveredAt, failedAt, clickedAt, error {code,
        message, details?}, metadata, provider, source. The error (``details["error"]`` or the
        ``error`` argument, which wins) becomes the record's ``lastError`` and so the delivery
        report's ``error``; its ``details`` go to the history entry (``errorDetails``)."""
        new_status = TrackingStatus(status)
        info = dict(details or {})
        last_error, error_details = _error_info(error if error is not None else info.get("error"))
        info.pop("error", None)
        record = await self.client.get_record(message_id)
        if record is None or not can_transition(record.status, new_status):
            return False
        time_fields = ("sentAt", "deliveredAt", "failedAt", "clickedAt")
        times = {k: info.pop(k) for k in time_fields if k in info}
        source = StatusSource(info.pop("source", StatusSource.SYSTEM))
        provider = info.pop("provider", None)
        history = info.pop("metadata", None) or (info or None)
        if error_details is not None:
            history = {**(history or {}), "errorDetails": error_details}
        await self.client.update_status(
            message_id,
            new_status,
            source=source,
            provider=provider,
            details=history,
            error=last_error,
            **{_snake(k): v for k, v in times.items()},
        )
        return True

    async def stop_tracking(self, message_id: str) -> bool:
        """Stop polling and delete the record (k-msg stopTracking deletes it); emits
        ``tracking:stopped``. False for an unknown id."""
        if await self.client.get_record(message_id) is None:
            return False
        await self.client.stop_tracking(message_id, reason="stop_tracking")
        await self.client.purge(message_id, reason="stop_tracking")
        self.emit(
            "tracking:stopped",
            {
                "id": f"evt_{message_id}",
                "type": "message.cancelled",
                "data": {"messageId": message_id},
            },
        )
        return True

    async def cleanup(self) -> int:
        """Delete every terminal record (k-msg cleanup: expired or terminal); expiry by time
        runs in the workers (retention). Emits ``cleanup:completed {removedCount}``."""
        # The old tracker's terminal set: DELIVERED, CLICKED, FAILED, CANCELLED. UNKNOWN stays:
        # a late provider report may still resolve it.
        terminal = [S.DELIVERED, S.CLICKED, S.FAILED, S.CANCELLED]
        # Keyset paging (each page costs the same however deep; offset stops at 10,000).
        ids = [record.message_id async for record in self.client.iter_records({"status": terminal})]
        for message_id in ids:
            await self.client.purge(message_id, reason="cleanup")
        removed = len(ids)
        self.emit("cleanup:completed", {"removedCount": removed})
        return removed

    # --- reads ------------------------------------------------------------------------------

    async def get_tracking_record(self, message_id: str) -> TrackingRecord | None:
        return await self.client.get_record(message_id)

    async def get_delivery_report(self, message_id: str) -> dict[str, Any] | None:
        """k-msg's DeliveryReport shape, derived from the record and its history."""
        record = await self.client.get_record(message_id)
        if record is None:
            return None
        return {
            "messageId": record.message_id,
            "phoneNumber": record.to_masked or record.to,
            "templateId": (record.metadata or {}).get("templateId"),
            "provider": record.provider_id,
            "status": record.status.value,
            "sentAt": record.sent_at,
            "deliveredAt": record.delivered_at,
            "clickedAt": record.clicked_at,
            "failedAt": record.failed_at,
            "error": None if record.last_error is None else record.last_error.model_dump(),
            "attempts": [
                {
                    "attemptNumber": n,
                    "attemptedAt": entry.at,
                    "status": entry.status.value,
                    "provider": entry.provider or record.provider_id,
                }
                for n, entry in enumerate(record.status_history, start=1)
            ],
            "metadata": record.metadata or {},
        }

    async def get_messages_by_status(self, status: TrackingStatus | str) -> list[TrackingRecord]:
        # Oldest first: new records land at the end, not between pages (keyset paging).
        flt = {"status": [TrackingStatus(status)]}
        return [record async for record in self.client.iter_records(flt, order_direction="asc")]

    async def get_stats(self) -> dict[str, Any]:
        return await self.client.stats()

    async def get_stats_for_period(self, start: datetime, end: datetime) -> dict[str, Any]:
        return await self.client.stats(start, end)
