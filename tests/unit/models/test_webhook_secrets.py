"""Outbound endpoint secrets never travel: literal headers are dropped where an endpoint is
decoded (and flagged), header sets live in the settings under a secretRef, and the settings
that bind and allow hosts are checked when they are loaded."""

from __future__ import annotations

import json

import orjson
import pytest
from pydantic import ValidationError

from deliverytrack.models.codec import decode_record, decode_send_result, encode
from deliverytrack.models.outbound import MAX_HEADERS, WebhookDelivery, WebhookEndpoint
from deliverytrack.models.settings import Settings
from tests.factories import send_recorded_factory, sent_record_factory

SECRET = "Bearer sk_live_do_not_leak"


def test_literal_headers_are_dropped_where_an_endpoint_is_decoded_and_flagged() -> None:
    endpoint = WebhookEndpoint.model_validate(
        {"id": "a", "url": "https://x.example/", "headers": {"Authorization": SECRET}}
    )
    assert endpoint.headers_dropped is True
    assert SECRET.encode() not in encode(endpoint)
    plain = WebhookEndpoint.model_validate({"id": "a", "url": "https://x.example/", "headers": {}})
    assert plain.headers_dropped is None and b"headersDropped" not in encode(plain)


def test_a_send_result_with_literal_headers_is_tracked_without_them() -> None:
    send = orjson.loads(encode(send_recorded_factory("m-1")))
    hostile = {"id": "a", "url": "https://x.example/", "headers": {"Authorization": SECRET}}
    crlf = {"id": "b", "url": "https://x.example/", "headers": {"X-A": "1\r\nB: 2"}}
    event = decode_send_result(json.dumps({**send, "webhooks": [hostile, crlf]}).encode())
    assert [e.headers_dropped for e in event.webhooks] == [True, True]
    assert SECRET.encode() not in encode(event)


def test_records_and_retries_written_before_headers_were_dropped_still_decode() -> None:
    record = orjson.loads(encode(sent_record_factory("m-1")))
    record["webhooks"] = [{"id": "a", "url": "https://x.example/", "headers": {"A": SECRET}}]
    decoded = decode_record(orjson.dumps(record))
    assert decoded.webhooks[0].headers_dropped is True
    assert SECRET.encode() not in encode(decoded)
    retry = {
        "deliveryId": "m-1:1:a",
        "endpoint": {"id": "a", "url": "https://x.example/", "headers": {"A": SECRET}},
        "eventId": "m-1:1",
        "eventType": "message.sent",
        "messageId": "m-1",
        "payload": {},
        "attempt": 2,
        "notBefore": "2026-11-23T09:00:00Z",
    }
    delivery = WebhookDelivery.model_validate(retry)
    assert delivery.endpoint.headers_dropped is True
    assert SECRET.encode() not in encode(delivery)


def test_operator_endpoints_with_literal_headers_refuse_to_load_without_printing_them() -> None:
    endpoint = {"id": "ops", "url": "https://x.example/", "headers": {"Authorization": SECRET}}
    with pytest.raises(ValidationError) as refused:
        Settings(webhooks=[endpoint])
    assert "DELIVERYTRACK_WEBHOOK_HEADERS" in str(refused.value)
    assert SECRET not in str(refused.value)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Token": "a\r\nInjected: 1"},
        {"X-Token": "a\nb"},
        {"X-Token": "a\x00b"},
        {"X-Token": "a\x7fb"},
        {"X Token": "v"},
        {"X-Token:": "v"},
        {"": "v"},
        {"Content-Length": "0"},
        {"content-type": "text/plain"},
        {"host": "elsewhere"},
        {"Connection": "close"},
        {"Keep-Alive": "timeout=5"},
        {"Transfer-Encoding": "chunked"},
        {"Proxy-Authorization": "Basic x"},
        {"Upgrade": "h2c"},
        {"TE": "trailers"},
        {"X-DeliveryTrack-Signature": "forged"},
        {"x-deliverytrack-timestamp": "1"},
        {f"X-H{i}": "v" for i in range(MAX_HEADERS + 1)},
        {"X-Big": "v" * 5_000},
    ],
)
def test_a_header_set_may_not_inject_or_replace_our_headers(headers: dict[str, str]) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(webhook_headers={"acme": headers})
    assert "acme" in str(refused.value)
    for value in headers.values():
        if len(value) > 3:
            assert value not in str(refused.value)  # a header value may be a secret


def test_header_sets_and_secret_hosts_load_normalised() -> None:
    settings = Settings(
        webhook_headers={"acme": {"Authorization": SECRET, "X-Tenant": "t 1\tx"}},
        webhook_secret_hosts={"acme": ["Hooks.Acme.Example.", "*.acme.example"]},
        webhook_allowed_hosts="127.0.0.1, 10.0.0.0/8 ,hooks.internal",
    )
    assert settings.webhook_headers["acme"]["Authorization"].get_secret_value() == SECRET
    assert SECRET not in repr(settings)
    assert settings.webhook_secret_hosts == {"acme": ("hooks.acme.example", "*.acme.example")}
    assert settings.webhook_allowed_hosts == ("127.0.0.1", "10.0.0.0/8", "hooks.internal")


def test_allowed_hosts_come_from_the_environment_comma_separated_or_as_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DELIVERYTRACK_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1,*.corp.example")
    assert Settings().webhook_allowed_hosts == ("127.0.0.1", "*.corp.example")
    monkeypatch.setenv("DELIVERYTRACK_WEBHOOK_ALLOWED_HOSTS", '["::1", "fd00::/8"]')
    assert Settings().webhook_allowed_hosts == ("::1", "fd00::/8")
    for bad in ("10.0.0.0/33", "a..b", '["x y"]'):
        monkeypatch.setenv("DELIVERYTRACK_WEBHOOK_ALLOWED_HOSTS", bad)
        with pytest.raises(ValidationError):
            Settings()
