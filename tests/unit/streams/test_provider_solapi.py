"""SOLAPI: the status client against the fake SOLAPI over real loopback HTTP, and the webhook
adapter (kmsg-behaviour 9.1; the FAILED-regex and dateCompleted quirks are fixed)."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from typing import Any

import pytest

from deliverytrack.models.enums import MessageType, TrackingStatus
from deliverytrack.models.settings import ProviderConfig, Settings
from deliverytrack.streams.providers.base import (
    MAX_EVENT_ID_CHARS,
    MAX_REPORTS_PER_REQUEST,
    ProviderError,
    StatusProvider,
    StatusQuery,
    WebhookAdapter,
    WebhookRejected,
)
from deliverytrack.streams.providers.registry import (
    build_provider,
    build_webhook_adapters,
)
from deliverytrack.streams.providers.solapi import (
    SolapiProvider,
    SolapiWebhookAdapter,
    map_solapi_status_code,
    parse_solapi_date,
    solapi_authorization,
)
from tests.fakes.solapi_api import FakeSolapiApi

S = TrackingStatus
KEY = "NCSTESTKEY"
SECRET = "test-secret-0123456789"
T0 = datetime(2024, 5, 1, 3, 0, tzinfo=UTC)
RECEIVED = datetime(2024, 5, 1, 3, 5, tzinfo=UTC)


def query(provider_message_id: str) -> StatusQuery:
    return StatusQuery(
        provider_message_id=provider_message_id,
        type=MessageType.SMS,
        to="010-1234-5678",
        requested_at=T0,
    )


@pytest.fixture
async def api() -> AsyncIterator[FakeSolapiApi]:
    fake = FakeSolapiApi(api_key=KEY, api_secret=SECRET)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def client(api: FakeSolapiApi, **kw: Any) -> SolapiProvider:
    assert api.base_url is not None
    options: dict[str, Any] = {"api_key": KEY, "api_secret": SECRET, "timeout_s": 5.0}
    options.update(kw)
    return SolapiProvider("solapi", base_url=api.base_url, **options)


@pytest.fixture
async def provider(api: FakeSolapiApi) -> AsyncIterator[SolapiProvider]:
    solapi = client(api)
    try:
        yield solapi
    finally:
        await solapi.close()


async def lookup_error(provider: SolapiProvider, pmid: str = "M4V1") -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await provider.get_delivery_status(query(pmid))
    return info.value


# --- mapping ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (None, S.UNKNOWN),
        ("", S.UNKNOWN),
        ("2000", S.PENDING),
        ("3000", S.SENT),
        ("4000", S.DELIVERED),
        ("1062", S.FAILED),
        ("2160", S.FAILED),
        ("3104", S.FAILED),  # k-msg: UNKNOWN (double-escaped regex)
        ("3059", S.FAILED),
        ("4001", S.UNKNOWN),
        ("9999", S.UNKNOWN),
        ("300", S.UNKNOWN),
        ("OK", S.UNKNOWN),
        # The failure pattern is four ASCII digits: Python's \d also matches other scripts'
        # digits (Arabic-Indic, fullwidth, Devanagari), and $ a trailing newline.
        ("3\u0661\u0660\u0664", S.UNKNOWN),
        ("\uff13\uff11\uff10\uff14", S.UNKNOWN),
        ("1\u0966\u0966\u0966", S.UNKNOWN),
        ("3104\n", S.UNKNOWN),
    ],
)
def test_status_code_table(code: str | None, status: TrackingStatus) -> None:
    assert map_solapi_status_code(code) is status


def test_authorization_header_is_hmac_of_date_and_salt() -> None:
    header = solapi_authorization(KEY, SECRET, T0, "abc123")
    date = "2024-05-01T03:00:00.000Z"
    signature = hmac.new(SECRET.encode(), (date + "abc123").encode(), sha256).hexdigest()
    assert header == (f"HMAC-SHA256 apiKey={KEY}, date={date}, salt=abc123, signature={signature}")


# --- the status client over HTTP ------------------------------------------------------------------


async def test_is_a_status_provider(provider: SolapiProvider) -> None:
    assert isinstance(provider, StatusProvider)
    assert provider.supports_status is True


@pytest.mark.parametrize(
    ("code", "message", "status"),
    [
        ("2000", "정상 접수(이통사로 접수 예정)", S.PENDING),
        ("3000", "이통사로 접수", S.SENT),
        ("4000", "수신완료", S.DELIVERED),
        ("3104", "카카오톡 미사용자", S.FAILED),
        ("3059", "번호 없음", S.FAILED),
        ("1062", "발신번호 미등록", S.FAILED),
        ("9999", "unexpected", S.UNKNOWN),
    ],
)
async def test_each_status_code_over_http(
    api: FakeSolapiApi,
    provider: SolapiProvider,
    code: str,
    message: str,
    status: TrackingStatus,
) -> None:
    api.set_status("M4V1", code, message)
    result = await provider.get_delivery_status(query("M4V1"))
    assert result is not None
    assert result.status is status
    assert result.status_code == code
    assert result.status_message == message
    assert result.raw is not None and result.raw["messageId"] == "M4V1"


async def test_missing_status_code_is_unknown(api: FakeSolapiApi, provider: SolapiProvider) -> None:
    api.set_status("M4V1", "")
    result = await provider.get_delivery_status(query("M4V1"))
    assert result is not None
    assert result.status is S.UNKNOWN
    assert result.status_code is None


async def test_wire_format_signed_get_with_message_id_and_limit_1(
    api: FakeSolapiApi, provider: SolapiProvider
) -> None:
    await provider.get_delivery_status(query("M4V1"))
    await provider.get_delivery_status(query("M4V1"))  # a fresh salt each time: no replay
    assert len(api.requests) == 2
    sent = api.requests[0]
    assert (sent.method, sent.path) == ("GET", "/messages/v4/list")
    assert sent.query == {"messageId": "M4V1", "limit": "1"}
    assert sent.headers["Authorization"].startswith(f"HMAC-SHA256 apiKey={KEY}, date=")
    assert sent.headers["Authorization"] != api.requests[1].headers["Authorization"]


async def test_delivered_dates(api: FakeSolapiApi, provider: SolapiProvider) -> None:
    api.set_status(
        "M4V1",
        "4000",
        "수신완료",
        dateSent="2024-05-01T03:00:02.000Z",
        dateCompleted="2024-05-01T03:00:09.500Z",
    )
    result = await provider.get_delivery_status(query("M4V1"))
    assert result is not None
    assert result.sent_at == datetime(2024, 5, 1, 3, 0, 2, tzinfo=UTC)
    assert result.delivered_at == datetime(2024, 5, 1, 3, 0, 9, 500000, tzinfo=UTC)
    assert result.failed_at is None


async def test_failure_date_is_failed_at_not_delivered_at(
    api: FakeSolapiApi, provider: SolapiProvider
) -> None:
    api.set_status(
        "M4V1",
        "3104",
        "카카오톡 미사용자",
        dateSent="2024-05-01T03:00:02Z",
        dateCompleted="2024-05-01T03:00:04Z",
    )
    result = await provider.get_delivery_status(query("M4V1"))
    assert result is not None
    assert result.status is S.FAILED
    assert result.delivered_at is None  # k-msg puts dateCompleted here even for failures
    assert result.failed_at == datetime(2024, 5, 1, 3, 0, 4, tzinfo=UTC)


async def test_unknown_message_is_no_result_yet(
    api: FakeSolapiApi, provider: SolapiProvider
) -> None:
    api.set_status("OTHER", "4000")
    assert await provider.get_delivery_status(query("M4V1")) is None


async def test_entry_found_by_message_id_field(
    api: FakeSolapiApi, provider: SolapiProvider
) -> None:
    entry = {"messageId": "M4V1", "statusCode": "4000"}
    api.fail_next(200, {"messageList": {"some-other-key": entry}})
    result = await provider.get_delivery_status(query("M4V1"))
    assert result is not None and result.status is S.DELIVERED


async def test_blank_id_is_invalid_without_a_request(
    api: FakeSolapiApi, provider: SolapiProvider
) -> None:
    error = await lookup_error(provider, "  ")
    assert (error.code, error.retryable) == ("INVALID_REQUEST", False)
    assert api.requests == []


# --- errors ---------------------------------------------------------------------------------------


async def test_bad_signature_is_non_retryable_auth_failure(api: FakeSolapiApi) -> None:
    wrong = client(api, api_secret="not-the-secret")
    try:
        error = await lookup_error(wrong)
    finally:
        await wrong.close()
    assert (error.code, error.retryable, error.http_status) == ("AUTHENTICATION_FAILED", False, 403)
    assert "SignatureDoesNotMatch" in error.message


async def test_unknown_api_key_is_non_retryable_auth_failure(api: FakeSolapiApi) -> None:
    wrong = client(api, api_key="NCSOTHER")
    try:
        error = await lookup_error(wrong)
    finally:
        await wrong.close()
    assert (error.code, error.retryable) == ("AUTHENTICATION_FAILED", False)
    assert "InvalidAPIKey" in error.message


async def test_skewed_clock_is_rejected(api: FakeSolapiApi) -> None:
    skewed = client(api, clock=lambda: datetime.now(UTC) - timedelta(hours=1))
    try:
        error = await lookup_error(skewed)
    finally:
        await skewed.close()
    assert error.code == "AUTHENTICATION_FAILED"
    assert "RequestTimeTooSkewed" in error.message


async def test_rate_limit_is_retryable(api: FakeSolapiApi, provider: SolapiProvider) -> None:
    api.rate_limit_after = 2
    api.set_status("M4V1", "3000")
    assert await provider.get_delivery_status(query("M4V1")) is not None
    assert await provider.get_delivery_status(query("M4V1")) is not None
    error = await lookup_error(provider)
    assert (error.code, error.retryable, error.http_status) == ("RATE_LIMIT_EXCEEDED", True, 429)
    assert "TooManyRequests" in error.message


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (500, {"errorCode": "InternalError", "errorMessage": "서버 오류"}, "PROVIDER_ERROR"),
        (502, None, "NETWORK_SERVICE_UNAVAILABLE"),
        (503, None, "NETWORK_SERVICE_UNAVAILABLE"),
        (504, "gateway timeout", "NETWORK_SERVICE_UNAVAILABLE"),
    ],
)
async def test_server_errors_are_retryable_and_transient(
    api: FakeSolapiApi, provider: SolapiProvider, status: int, body: Any, code: str
) -> None:
    api.set_status("M4V1", "4000")
    if isinstance(body, str):
        api.respond_raw_next(status, body)
    else:
        api.fail_next(status, body)
    error = await lookup_error(provider)
    assert (error.code, error.retryable, error.http_status) == (code, True, status)
    result = await provider.get_delivery_status(query("M4V1"))  # the next call succeeds
    assert result is not None and result.status is S.DELIVERED


async def test_validation_error_is_non_retryable(
    api: FakeSolapiApi, provider: SolapiProvider
) -> None:
    api.fail_next(400, {"errorCode": "ValidationError", "errorMessage": "잘못된 요청"})
    error = await lookup_error(provider)
    assert (error.code, error.retryable) == ("INVALID_REQUEST", False)
    assert "ValidationError" in error.message


@pytest.mark.parametrize(
    "answer",
    [
        "<html>maintenance</html>",
        {"unexpected": True},
        {"messageList": []},
        {"messageList": None},
        [1, 2, 3],
    ],
)
async def test_malformed_answer_is_retryable_provider_error(
    api: FakeSolapiApi, provider: SolapiProvider, answer: Any
) -> None:
    if isinstance(answer, str):
        api.respond_raw_next(200, answer)
    else:
        api.fail_next(200, answer)
    error = await lookup_error(provider)
    assert (error.code, error.retryable) == ("PROVIDER_ERROR", True)


async def test_unreachable_server_is_retryable_network_error(api: FakeSolapiApi) -> None:
    assert api.base_url is not None
    url = api.base_url
    await api.stop()
    gone = SolapiProvider("solapi", api_key=KEY, api_secret=SECRET, base_url=url, timeout_s=2.0)
    try:
        error = await lookup_error(gone)
    finally:
        await gone.close()
    assert (error.code, error.retryable) == ("NETWORK_ERROR", True)


# --- webhook --------------------------------------------------------------------------------------

TOKEN = "whsec-solapi-1"


def report(message_id: str, code: str, **extra: Any) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "groupId": "G4V20240501000000ABCDEFGHIJKLMNO",
        "statusCode": code,
        "statusMessage": {"4000": "수신완료", "3104": "카카오톡 미사용자"}.get(code, "접수"),
        "to": "01012345678",
        "from": "0212345678",
        "type": "ATA",
        "dateProcessed": "2024-05-01T03:00:01.000Z",
        "dateReported": "2024-05-01T03:00:08.000Z",
        "dateReceived": "2024-05-01T03:00:07.000Z",
        "networkCode": "SKT",
        **extra,
    }


@pytest.fixture
def adapter() -> SolapiWebhookAdapter:
    return SolapiWebhookAdapter("solapi", webhook_secret=TOKEN)


def test_webhook_adapter_protocol(adapter: SolapiWebhookAdapter) -> None:
    assert isinstance(adapter, WebhookAdapter)
    assert adapter.provider_id == "solapi"


@pytest.mark.parametrize(
    "headers",
    [{"X-Webhook-Token": TOKEN}, {"x-webhook-token": TOKEN}, {"Authorization": f"Bearer {TOKEN}"}],
)
def test_verify_accepts_the_shared_secret(
    adapter: SolapiWebhookAdapter, headers: dict[str, str]
) -> None:
    adapter.verify(headers, b"[]", RECEIVED)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Webhook-Token": "wrong"},
        {"X-Webhook-Token": TOKEN + "x"},
        {"Authorization": "Basic " + TOKEN},
        {"Authorization": "Bearer wrong"},
    ],
)
def test_verify_rejects_missing_or_wrong_secret_with_401(
    adapter: SolapiWebhookAdapter, headers: dict[str, str]
) -> None:
    with pytest.raises(WebhookRejected) as info:
        adapter.verify(headers, b"[]", RECEIVED)
    assert info.value.status == 401


def test_verify_without_configured_secret_fails_closed() -> None:
    open_adapter = SolapiWebhookAdapter("solapi", webhook_secret=None)
    with pytest.raises(WebhookRejected) as info:
        open_adapter.verify({"X-Webhook-Token": ""}, b"[]", RECEIVED)
    assert info.value.status == 401
    assert "webhookSecret" in info.value.reason


def test_parse_single_report(adapter: SolapiWebhookAdapter) -> None:
    body = json.dumps(report("M4V1", "4000")).encode()
    [parsed] = adapter.parse({}, body, RECEIVED)
    assert parsed.event_id == "solapi:M4V1:4000:2024-05-01T03:00:08.000Z"
    assert parsed.provider_id == "solapi"
    assert parsed.provider_message_id == "M4V1"
    assert parsed.status is S.DELIVERED
    assert (parsed.status_code, parsed.status_message) == ("4000", "수신완료")
    assert parsed.sent_at == datetime(2024, 5, 1, 3, 0, 1, tzinfo=UTC)
    assert parsed.delivered_at == datetime(2024, 5, 1, 3, 0, 7, tzinfo=UTC)
    assert parsed.received_at == RECEIVED
    assert parsed.raw is not None and parsed.raw["networkCode"] == "SKT"


def test_parse_batch_with_deterministic_event_ids(adapter: SolapiWebhookAdapter) -> None:
    batch = [
        report("M4V1", "4000", dateUpdated="2024-05-01T03:00:09.000Z"),
        report("M4V2", "3104"),
        report("M4V3", "3000"),
    ]
    body = json.dumps(batch).encode()
    first = adapter.parse({}, body, RECEIVED)
    again = adapter.parse({}, body, RECEIVED + timedelta(minutes=1))
    assert [r.status for r in first] == [S.DELIVERED, S.FAILED, S.SENT]
    assert [r.event_id for r in first] == [
        "solapi:M4V1:4000:2024-05-01T03:00:09.000Z",
        "solapi:M4V2:3104:2024-05-01T03:00:08.000Z",
        "solapi:M4V3:3000:2024-05-01T03:00:08.000Z",
    ]
    assert [r.event_id for r in again] == [r.event_id for r in first]
    assert first[1].failed_at == datetime(2024, 5, 1, 3, 0, 8, tzinfo=UTC)
    assert first[1].delivered_at is None


def test_parse_message_list_envelope(adapter: SolapiWebhookAdapter) -> None:
    body = json.dumps({"messageList": {"M4V1": report("M4V1", "4000")}}).encode()
    assert [r.provider_message_id for r in adapter.parse({}, body, RECEIVED)] == ["M4V1"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b"[1, 2]",
        b'"text"',
        json.dumps([{"statusCode": "4000"}]).encode(),
        json.dumps([report("M4V1", "4000"), {"messageId": ""}]).encode(),
    ],
)
def test_parse_malformed_is_400(adapter: SolapiWebhookAdapter, body: bytes) -> None:
    with pytest.raises(WebhookRejected) as info:
        adapter.parse({}, body, RECEIVED)
    assert info.value.status == 400


def test_parse_drops_an_unparsable_date(adapter: SolapiWebhookAdapter) -> None:
    """k-msg ``parseDate``: a bad date is absent, not a rejected report."""
    body = json.dumps([report("M4V1", "4000", dateProcessed="yesterday")]).encode()
    assert adapter.parse({}, body, RECEIVED)[0].sent_at is None


@pytest.mark.parametrize(
    "date",
    [
        "9999-12-31T23:59:59-01:00",  # past datetime.max once in UTC (OverflowError before)
        "0001-01-01T00:00:00+09:00",
        "1969-12-31T23:59:59Z",
        "9500-01-01T00:00:00Z",
    ],
)
def test_a_date_out_of_range_is_dropped_not_a_crash(
    adapter: SolapiWebhookAdapter, date: str
) -> None:
    """Out of the range an event holds, a date is as good as unparsable (k-msg
    ``parseDate``): absent, the report kept, the date still in ``raw``."""
    assert parse_solapi_date(date) is None
    body = json.dumps([report("M4V1", "4000", dateCompleted=date, dateProcessed=date)]).encode()
    [parsed] = adapter.parse({}, body, RECEIVED)
    assert (parsed.sent_at, parsed.status) == (None, S.DELIVERED)
    assert parsed.delivered_at == datetime(2024, 5, 1, 3, 0, 7, tzinfo=UTC)  # dateReceived
    assert parsed.raw is not None and parsed.raw["dateCompleted"] == date


def test_json_nested_too_deeply_is_400(adapter: SolapiWebhookAdapter) -> None:
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 5_000 + b"1" + b"}" * 5_000):
        with pytest.raises(WebhookRejected) as info:
            adapter.parse({}, body, RECEIVED)
        assert info.value.status == 400 and "nested too deeply" in info.value.reason


def test_at_most_max_reports_per_request(adapter: SolapiWebhookAdapter) -> None:
    batch = [report(f"M{i}", "4000") for i in range(MAX_REPORTS_PER_REQUEST + 1)]
    with pytest.raises(WebhookRejected) as info:
        adapter.parse({}, json.dumps(batch).encode(), RECEIVED)
    assert info.value.status == 400 and f"at most {MAX_REPORTS_PER_REQUEST}" in info.value.reason
    envelope = json.dumps({"messageList": {r["messageId"]: r for r in batch}}).encode()
    with pytest.raises(WebhookRejected):
        adapter.parse({}, envelope, RECEIVED)
    assert len(adapter.parse({}, json.dumps(batch[:-1]).encode(), RECEIVED)) == len(batch) - 1


def test_a_long_derived_event_id_is_bounded_and_stable(adapter: SolapiWebhookAdapter) -> None:
    body = json.dumps([report("M" * 500, "4000", dateUpdated="2024-05-01T03:00:09.000Z")])
    first = adapter.parse({}, body.encode(), RECEIVED)[0].event_id
    assert len(first) == MAX_EVENT_ID_CHARS
    assert first.startswith("solapi:MMM")
    assert adapter.parse({}, body.encode(), RECEIVED)[0].event_id == first
    other = body.replace("03:00:09", "03:00:10")
    assert adapter.parse({}, other.encode(), RECEIVED)[0].event_id != first


def test_a_token_with_undecodable_bytes_is_refused(adapter: SolapiWebhookAdapter) -> None:
    # aiohttp decodes header bytes with surrogateescape: b"\xff" arrives as "\udcff".
    for token in ("\udcff\udcfe", TOKEN + "\udcff", "é"):
        with pytest.raises(WebhookRejected) as info:
            adapter.verify({"X-Webhook-Token": token}, b"[]", RECEIVED)
        assert info.value.status == 401


# --- settings and registry ------------------------------------------------------------------------


def test_settings_and_registry_build_solapi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "DELIVERYTRACK_PROVIDERS",
        json.dumps(
            {
                "solapi": {
                    "kind": "solapi",
                    "apiKey": KEY,
                    "apiSecret": SECRET,
                    "webhookSecret": TOKEN,
                    "timeoutMs": 3000,
                },
                "sim": {"kind": "simulated", "baseUrl": "http://127.0.0.1:1"},
            }
        ),
    )
    settings = Settings()
    config = settings.providers["solapi"]
    provider = build_provider("solapi", config, default_timeout_s=10.0)
    assert isinstance(provider, SolapiProvider)
    assert provider.base_url == "https://api.solapi.com"
    assert provider.timeout_s == 3.0
    adapters = build_webhook_adapters(settings)
    assert set(adapters) == {"solapi"}
    adapters["solapi"].verify({"X-Webhook-Token": TOKEN}, b"[]", RECEIVED)


def test_registry_refuses_solapi_without_credentials() -> None:
    with pytest.raises(ValueError, match="apiKey and apiSecret"):
        build_provider("solapi", ProviderConfig(kind="solapi", api_key=KEY), 10.0)


def test_event_ids_carry_the_provider_id() -> None:
    second_account = SolapiWebhookAdapter("solapi-b", webhook_secret=TOKEN)
    body = json.dumps(report("M4V1", "4000")).encode()
    [parsed] = second_account.parse({}, body, RECEIVED)
    assert parsed.event_id == "solapi-b:M4V1:4000:2024-05-01T03:00:08.000Z"
    assert parsed.provider_id == "solapi-b"


async def test_through_the_webhook_ingress(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ingress (streams/webhooks/ingress.py) picks the native adapter: 401, 400, then 200."""
    from deliverytrack.streams.webhooks.ingress import WebhookIngress
    from deliverytrack.streams.webhooks.ingress import build_webhook_adapters as ingress_adapters

    monkeypatch.setenv(
        "DELIVERYTRACK_PROVIDERS",
        json.dumps(
            {
                "solapi": {
                    "kind": "solapi",
                    "apiKey": KEY,
                    "apiSecret": SECRET,
                    "webhookSecret": TOKEN,
                }
            }
        ),
    )
    published: list[tuple[str, bytes, bytes]] = []

    async def publish(topic: str, key: bytes, value: bytes) -> Any:
        published.append((topic, key, value))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    ingress = WebhookIngress(ingress_adapters(Settings()), publish, "t.provider-webhooks")
    body = json.dumps([report("M4V1", "4000"), report("M4V2", "3104")]).encode()
    assert (await ingress.handle("solapi", {}, body, RECEIVED))[0] == 401
    assert (await ingress.handle("solapi", {"X-Webhook-Token": TOKEN}, b"{", RECEIVED))[0] == 400
    status, answer = await ingress.handle("solapi", {"X-Webhook-Token": TOKEN}, body, RECEIVED)
    assert status == 200 and answer["accepted"] == 2
    assert [key for _, key, _ in published] == [b"solapi:M4V1", b"solapi:M4V2"]
    assert json.loads(published[1][2])["status"] == "FAILED"


async def test_non_finite_numbers_in_the_answer_become_null(
    api: FakeSolapiApi, provider: SolapiProvider
) -> None:
    # Python's json (the fake's encoder, like many providers' platforms) writes NaN and
    # Infinity; the answer is still a status, with those values null in `raw`.
    api.set_status("M4V1", "4000")
    api.messages["M4V1"].update(price=float("nan"), point=float("inf"), fee=-float("inf"))
    result = await provider.get_delivery_status(query("M4V1"))
    assert result is not None
    assert result.status is S.DELIVERED
    assert result.raw is not None
    assert (result.raw["price"], result.raw["point"], result.raw["fee"]) == (None, None, None)
