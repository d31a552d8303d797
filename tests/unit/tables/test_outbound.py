"""Outbound webhooks, the pure part: matching, payload, retry decisions and delays."""

from __future__ import annotations

from datetime import timedelta

import pytest

from deliverytrack.models.webhooks import WebhookEndpoint
from deliverytrack.tables.outbound import (
    deliveries_for,
    event_type_for,
    next_attempt,
    payload_for,
    should_retry,
)
from tests.factories import T0

CHANGE = {
    "eventId": "m-1:2",
    "messageId": "m-1",
    "status": "DELIVERED",
    "changedAt": "2026-11-24T01:00:00Z",
    "record": {"providerId": "solapi", "messageId": "m-1"},
}


def ep(name: str, **extra: object) -> WebhookEndpoint:
    return WebhookEndpoint.model_validate({"id": name, "url": f"https://x.example/{name}", **extra})


def test_event_types_and_payload_follow_kmsgs_event_shape() -> None:
    assert event_type_for("DELIVERED") == "message.delivered"
    payload = payload_for(CHANGE, "message.delivered")
    assert payload == {
        "id": "m-1:2",
        "type": "message.delivered",
        "timestamp": "2026-11-24T01:00:00Z",
        "data": CHANGE,
        "metadata": {"messageId": "m-1", "providerId": "solapi"},
        "version": "1",
    }


def test_only_endpoints_that_want_the_event_get_a_delivery_once_each() -> None:
    endpoints = [
        ep("all"),
        ep("failed-only", events=["message.failed"]),
        ep("delivered", events=["message.delivered"]),
        ep("all"),  # the same id again (global and per message): one delivery
    ]
    deliveries = deliveries_for(CHANGE, endpoints, T0)
    assert [d.endpoint.id for d in deliveries] == ["all", "delivered"]
    assert deliveries[0].delivery_id == "m-1:2:all" and deliveries[0].attempt == 1


@pytest.mark.parametrize(
    ("status", "error", "retry"),
    [
        (500, "HTTP 500", True),
        (503, "HTTP 503", True),
        (408, "HTTP 408", True),
        (429, "HTTP 429", True),
        (400, "HTTP 400", False),
        (404, "HTTP 404", False),
        (301, "HTTP 301", False),
        (None, "timeout after 5000 ms", True),
        (None, "connection error: Cannot connect to host", True),
        (None, "secretRef 'x' is not configured", False),
    ],
)
def test_what_is_retried(status: int | None, error: str, retry: bool) -> None:
    assert should_retry(status, error) is retry


def test_retries_back_off_and_stop_after_max_retries() -> None:
    (delivery,) = deliveries_for(
        CHANGE, [ep("a", maxRetries=2, retryDelayMs=1000, backoffMultiplier=2)], T0
    )
    second = next_attempt(delivery, T0)
    assert second is not None and second.attempt == 2
    assert second.not_before == T0 + timedelta(milliseconds=2000)  # base * mult^1
    third = next_attempt(second, T0)
    assert third is not None and third.not_before == T0 + timedelta(milliseconds=4000)
    assert next_attempt(third, T0) is None
    assert next_attempt(deliveries_for(CHANGE, [ep("b", maxRetries=0)], T0)[0], T0) is None
