"""Outbound webhooks (k-msg's @k-msg/webhook, done the event-sourced way): endpoints, the
payload a receiver gets, and the delivery events on Kafka."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deliverytrack.models.common import Frozen, JsonObject, NonEmptyStr, UtcDatetime

MESSAGE_EVENT_TYPES: tuple[str, ...] = (
    "message.queued",
    "message.pending",
    "message.sending",
    "message.sent",
    "message.delivered",
    "message.clicked",
    "message.failed",
    "message.cancelled",
    "message.unknown",
)


class WebhookEndpoint(Frozen):
    """Where to POST status changes. ``secretRef`` names a secret in
    ``DELIVERYTRACK_WEBHOOK_SECRETS``: secrets never travel on topics or in records."""

    id: NonEmptyStr
    url: NonEmptyStr = Field(pattern=r"^https?://")
    events: tuple[str, ...] = Field(
        default=("*",), description="event types (message.delivered, ...) or '*' for all"
    )
    headers: dict[str, str] = Field(default_factory=dict)
    secret_ref: str | None = None
    timeout_ms: int = Field(default=5_000, ge=1, le=60_000)
    max_retries: int = Field(default=3, ge=0, le=10)
    retry_delay_ms: int = Field(default=1_000, ge=1)
    backoff_multiplier: float = Field(default=2.0, ge=1, le=5)

    def wants(self, event_type: str) -> bool:
        return "*" in self.events or event_type in self.events

    def delay_ms(self, retry: int) -> int:
        """k-msg: the delay before retry n (n >= 1) is base * multiplier^n."""
        return int(self.retry_delay_ms * self.backoff_multiplier**retry)


class WebhookDelivery(Frozen):
    """One endpoint's delivery of one event, and the attempt it is at (retry topic value)."""

    delivery_id: NonEmptyStr
    endpoint: WebhookEndpoint
    event_id: NonEmptyStr
    event_type: NonEmptyStr
    message_id: NonEmptyStr
    payload: JsonObject
    attempt: int = Field(ge=1)
    not_before: UtcDatetime


class WebhookAttempted(Frozen):
    """The outcome of one attempt (``deliverytrack.webhook-deliveries``)."""

    schema_version: Literal[1] = 1
    event_type: Literal["WebhookAttempted"] = "WebhookAttempted"
    delivery_id: NonEmptyStr
    endpoint_id: NonEmptyStr
    event_id: NonEmptyStr
    message_id: NonEmptyStr
    attempt: int
    outcome: Literal["delivered", "failed", "exhausted"]
    http_status: int | None = None
    error: str | None = None
    latency_ms: int
    attempted_at: UtcDatetime
    next_attempt_at: UtcDatetime | None = None
