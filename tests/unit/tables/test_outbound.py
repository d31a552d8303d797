"""Outbound webhooks, the pure part: matching, payload, retry decisions and delays; and the
endpoint rules that refuse, where it is decoded, an endpoint the dispatcher could not use."""

from __future__ import annotations

import json
from datetime import timedelta

import orjson
import pytest
from pydantic import ValidationError

from deliverytrack.models.codec import DecodeError, decode_send_result, encode
from deliverytrack.models.common import MAX_JSON_DEPTH
from deliverytrack.models.outbound import (
    MAX_RETRY_DELAY_MS,
    WebhookAttempted,
    WebhookDelivery,
    WebhookEndpoint,
)
from deliverytrack.tables.outbound import (
    check_change,
    deliveries_for,
    event_type_for,
    header_value,
    next_attempt,
    own_endpoints,
    payload_for,
    should_retry,
)
from tests.factories import T0, send_recorded_factory

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


# --- hostile endpoints are refused where they are decoded --------------------------------------


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"retryDelayMs": 10**30}, "retryDelayMs"),
        ({"retryDelayMs": MAX_RETRY_DELAY_MS + 1}, "retryDelayMs"),
        ({"backoffMultiplier": float("inf")}, "backoffMultiplier"),
        ({"url": "http://a..b/"}, "url"),
        ({"url": "http://\u2488.example/"}, "url"),  # the IDNA codec refuses it (empty label)
        ({"url": "http://xn--zz.example/"}, "url"),  # not valid punycode
        ({"url": f"http://{'a' * 64}.example/"}, "url"),  # a label over 63 characters
        ({"url": "http://ex ample.example/"}, "url"),
        ({"url": "http://x.example/\r\nHost: y"}, "url"),
        ({"url": "http://[::1/"}, "url"),
        ({"url": "http://:80/"}, "url"),
        ({"url": "http://x.example:99999/"}, "url"),
        ({"url": "ftp://x.example/"}, "url"),
        ({"url": "http://x.example/" + "a" * 3_000}, "url"),
        ({"id": "a\r\nb"}, "id"),
        ({"id": "x" * 200}, "id"),
        ({"events": ["message.sent"] * 100}, "events"),
    ],
)
def test_an_endpoint_the_dispatcher_could_not_use_is_refused(
    extra: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        ep("hostile", **extra)
    assert refused.value.errors()[0]["loc"][0] == field


def test_a_send_result_with_such_an_endpoint_is_refused_at_decode() -> None:
    send = orjson.loads(encode(send_recorded_factory("m-1")))
    for hostile in (
        {"id": "a", "url": "https://x.example/", "retryDelayMs": 10**30},
        {"id": "a", "url": "http://a..b/"},
    ):
        raw = json.dumps({**send, "webhooks": [hostile]}).encode()
        with pytest.raises(DecodeError):
            decode_send_result(raw)


def test_usual_endpoints_are_accepted() -> None:
    assert ep("a", url="https://hooks.example.com:8443/p?q=1").url.endswith("?q=1")
    assert ep("b", url="http://127.0.0.1:8080/x").url == "http://127.0.0.1:8080/x"
    assert ep("c", url="http://[::1]:8080/x").url == "http://[::1]:8080/x"
    assert ep("d", url="https://例え.jp/hook").url == "https://例え.jp/hook"
    assert ep("f", retryDelayMs=MAX_RETRY_DELAY_MS).retry_delay_ms == MAX_RETRY_DELAY_MS


def test_the_delay_is_capped_so_the_next_attempt_is_always_representable() -> None:
    endpoint = ep("a", maxRetries=10, retryDelayMs=MAX_RETRY_DELAY_MS, backoffMultiplier=5)
    (delivery,) = deliveries_for(CHANGE, [endpoint], T0)
    while (following := next_attempt(delivery, T0)) is not None:
        assert following.not_before == T0 + timedelta(milliseconds=MAX_RETRY_DELAY_MS)
        # What goes on the retry topic decodes again.
        assert WebhookDelivery.model_validate_json(encode(following)) == following
        delivery = following
    assert delivery.attempt == 11
    assert ep("b", retryDelayMs=1_000, backoffMultiplier=5).delay_ms(500) == MAX_RETRY_DELAY_MS


# --- a status change is checked before a delivery is built ---------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        [],
        "x",
        {**CHANGE, "eventId": None},
        {**CHANGE, "messageId": 7},
        {**CHANGE, "status": "DELIVERED\r\nX: 1"},
        {k: v for k, v in CHANGE.items() if k != "changedAt"},
        {**CHANGE, "record": [1]},
    ],
)
def test_a_malformed_status_change_raises_value_error(bad: object) -> None:
    with pytest.raises(ValueError):
        check_change(bad)
    with pytest.raises(ValueError):
        own_endpoints(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        deliveries_for(bad, [ep("a")], T0)  # type: ignore[arg-type]


def test_an_invalid_own_endpoint_does_not_take_the_valid_ones_down() -> None:
    webhooks = [{"id": "ok", "url": "https://x.example/"}, {"id": "bad", "url": "http://a..b/"}]
    valid, errors = own_endpoints({**CHANGE, "record": {"webhooks": webhooks}})
    assert [e.id for e in valid] == ["ok"]
    assert len(errors) == 1 and errors[0].startswith("record.webhooks[1]: ")
    with pytest.raises(ValueError):
        own_endpoints({**CHANGE, "record": {"webhooks": {"id": "x"}}})


def test_a_record_whose_metadata_nests_as_deep_as_allowed_still_gets_its_webhooks() -> None:
    deep: dict[str, object] = {}
    for _ in range(MAX_JSON_DEPTH - 1):
        deep = {"d": deep}
    change = {**CHANGE, "record": {**CHANGE["record"], "metadata": deep}}  # type: ignore[dict-item]
    (delivery,) = deliveries_for(change, [ep("a")], T0)
    assert WebhookDelivery.model_validate_json(encode(delivery)) == delivery


def test_header_values_are_sent_verbatim_when_safe_and_percent_encoded_otherwise() -> None:
    assert header_value("m-1:2:ops") == "m-1:2:ops"
    assert header_value("m 1\r\n:2") == "m%201%0D%0A:2"
    assert header_value("é%") == "%C3%A9%25"


def test_the_longest_message_ids_still_get_their_webhooks() -> None:
    message_id = "m" * 512
    change = {**CHANGE, "messageId": message_id, "eventId": f"{message_id}:100000"}
    (delivery,) = deliveries_for(change, [ep("x" * 128)], T0)
    assert delivery.delivery_id == f"{message_id}:100000:{'x' * 128}"
    assert WebhookDelivery.model_validate_json(encode(delivery)) == delivery
    outcome = WebhookAttempted(
        delivery_id=delivery.delivery_id,
        endpoint_id=delivery.endpoint.id,
        event_id=delivery.event_id,
        message_id=delivery.message_id,
        attempt=1,
        outcome="delivered",
        latency_ms=1,
        attempted_at=T0,
    )
    assert outcome.delivery_id == delivery.delivery_id


def test_a_slim_status_change_gets_its_own_endpoints_and_provider() -> None:
    """DELIVERYTRACK_STATUS_CHANGE_RECORD=changes: no record, but its changes always carry the
    message's own endpoints and its providerId; the receiver's data is the change as published."""
    hooks = [{"id": "own", "url": "https://x.example/own"}]
    slim = {k: v for k, v in CHANGE.items() if k != "record"}
    slim["changes"] = {"providerId": "solapi", "type": "SMS", "webhooks": hooks}
    valid, errors = own_endpoints(slim)
    assert [e.id for e in valid] == ["own"] and errors == []
    global_, own = ep("global"), valid[0]
    deliveries = deliveries_for(slim, [global_, own], T0)
    assert [d.endpoint.id for d in deliveries] == ["global", "own"]
    payload = deliveries[1].payload
    assert payload["metadata"] == {"messageId": "m-1", "providerId": "solapi"}
    assert payload["data"] == slim
    without_own = {**slim, "changes": {"providerId": "solapi", "type": "SMS"}}
    assert own_endpoints(without_own) == ([], [])
    with pytest.raises(ValueError, match="'changes' must be a JSON object"):
        check_change({**slim, "changes": [1]})
