"""Outbound webhooks, the pure part: which endpoints get a status change, the payload they get,
and whether a failed attempt is retried. No I/O, no clock (``now`` is passed in)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from deliverytrack.models.webhooks import WebhookDelivery, WebhookEndpoint

RETRYABLE_ERRORS = (
    "timeout",
    "network",
    "connection",
    "econnreset",
    "enotfound",
    "econnrefused",
    "socket hang up",
    "cannot connect",
    "disconnected",
)


def event_type_for(status: str) -> str:
    """``message.<status>``: k-msg's message.sent/delivered/failed/clicked, plus ours."""
    return f"message.{status.lower()}"


def payload_for(change: Mapping[str, Any], event_type: str) -> dict[str, Any]:
    """k-msg's webhook Event shape around a StatusChanged."""
    record = change.get("record") or {}
    return {
        "id": change["eventId"],
        "type": event_type,
        "timestamp": change["changedAt"],
        "data": dict(change),
        "metadata": {
            "messageId": change["messageId"],
            "providerId": record.get("providerId"),
        },
        "version": "1",
    }


def deliveries_for(
    change: Mapping[str, Any], endpoints: Iterable[WebhookEndpoint], now: datetime
) -> list[WebhookDelivery]:
    """One delivery per endpoint that wants this change (global ones, then the message's)."""
    event_type = event_type_for(str(change["status"]))
    payload = payload_for(change, event_type)
    seen: set[str] = set()
    out = []
    for endpoint in endpoints:
        if endpoint.id in seen or not endpoint.wants(event_type):
            continue
        seen.add(endpoint.id)
        out.append(
            WebhookDelivery(
                delivery_id=f"{change['eventId']}:{endpoint.id}",
                endpoint=endpoint,
                event_id=change["eventId"],
                event_type=event_type,
                message_id=change["messageId"],
                payload=payload,
                attempt=1,
                not_before=now,
            )
        )
    return out


def should_retry(http_status: int | None, error: str | None) -> bool:
    """k-msg: 408, 429 and 5xx are retried; other answers are not; without an answer,
    transport errors are."""
    if http_status is not None:
        return http_status in (408, 429) or http_status >= 500
    text = (error or "").lower()
    return any(token in text for token in RETRYABLE_ERRORS)


def next_attempt(delivery: WebhookDelivery, now: datetime) -> WebhookDelivery | None:
    """The retry after a failed attempt, or None once ``maxRetries`` are used up."""
    retries_used = delivery.attempt - 1
    if retries_used >= delivery.endpoint.max_retries:
        return None
    delay = delivery.endpoint.delay_ms(retries_used + 1)
    return delivery.model_copy(
        update={"attempt": delivery.attempt + 1, "not_before": now + timedelta(milliseconds=delay)}
    )
