"""Outbound webhooks, the pure part: which endpoints get a status change, the payload they get,
and whether a failed attempt is retried. No I/O, no clock (``now`` is passed in).

A status change is read as a plain JSON object (its ``data`` goes to the receiver as published);
what the dispatcher relies on is checked here, so a malformed change raises ``ValueError`` (or
pydantic's ``ValidationError``, a ``ValueError`` too) and never a ``KeyError`` or ``TypeError``
further down.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from deliverytrack.models.enums import TrackingStatus
from deliverytrack.models.webhooks import WebhookDelivery, WebhookEndpoint

_STATUSES = frozenset(status.value for status in TrackingStatus)
_HEADER_SAFE = re.compile(r"[\x21-\x7e]*")

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


def check_change(change: Any) -> Mapping[str, Any]:
    """``change`` if it has what a delivery needs: ``eventId``, ``messageId`` and ``changedAt``
    strings, a known ``status`` and, if present, a ``record`` object; else ``ValueError``."""
    if not isinstance(change, Mapping):
        raise ValueError(f"a status change must be a JSON object, not {type(change).__name__}")
    for name in ("eventId", "messageId", "changedAt"):
        value = change.get(name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"a status change needs a non-empty string {name!r}")
    if change.get("status") not in _STATUSES:
        raise ValueError(f"unknown status {str(change.get('status'))[:80]!r}")
    if not isinstance(change.get("record") or {}, Mapping):
        raise ValueError("'record' must be a JSON object")
    return change


def own_endpoints(change: Mapping[str, Any]) -> tuple[list[WebhookEndpoint], list[str]]:
    """The message's own endpoints (its record's ``webhooks``) that are valid, and why each of
    the others is not (a record written before an endpoint rule was tightened may hold one:
    the valid endpoints still get their deliveries)."""
    webhooks = (check_change(change).get("record") or {}).get("webhooks") or []
    if not isinstance(webhooks, list):
        raise ValueError("'record.webhooks' must be a list")
    valid: list[WebhookEndpoint] = []
    errors: list[str] = []
    for index, webhook in enumerate(webhooks):
        try:
            valid.append(WebhookEndpoint.model_validate(webhook))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            errors.append(f"record.webhooks[{index}]: {exc}")
    return valid, errors


def deliveries_for(
    change: Mapping[str, Any], endpoints: Iterable[WebhookEndpoint], now: datetime
) -> list[WebhookDelivery]:
    """One delivery per endpoint that wants this change (global ones, then the message's)."""
    check_change(change)
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
    delay = delivery.endpoint.delay_ms(retries_used + 1)  # capped: MAX_RETRY_DELAY_MS
    return delivery.model_copy(
        update={"attempt": delivery.attempt + 1, "not_before": now + timedelta(milliseconds=delay)}
    )


def header_value(text: str) -> str:
    """``text`` as an HTTP header value: unchanged when it is visible ASCII, else
    percent-encoded (UTF-8), so an id with a space, a control character or non-ASCII text can
    never break (or inject into) the request."""
    if _HEADER_SAFE.fullmatch(text):
        return text
    return quote(text, safe="".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%"))
