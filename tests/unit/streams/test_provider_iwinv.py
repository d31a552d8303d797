"""IWINV: the AlimTalk and SMS v2 history client against the fake IWINV over real loopback HTTP,
and the webhook adapter (kmsg-behaviour 9.2; the list[0], bodyless-5xx and local-timezone quirks
are fixed)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
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
from deliverytrack.streams.providers.iwinv import (
    IwinvProvider,
    IwinvWebhookAdapter,
    map_iwinv_code,
    map_sms_history_status,
    parse_kst_datetime,
)
from deliverytrack.streams.providers.registry import build_provider, build_webhook_adapters
from tests.fakes.iwinv_api import FakeIwinvApi

S = TrackingStatus
API_KEY = "iwinv-alimtalk-key"
SMS_KEY = "iwinv-sms-key"
SMS_AUTH = "iwinv-sms-auth"
COMPANY = "company-1"
# 2024-05-01 12:10 KST; requested at 12:00 KST
NOW = datetime(2024, 5, 1, 3, 10, tzinfo=UTC)
T0 = datetime(2024, 5, 1, 3, 0, tzinfo=UTC)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def query(
    pmid: str,
    type: MessageType = MessageType.ALIMTALK,
    *,
    requested_at: datetime = T0,
    scheduled_at: datetime | None = None,
) -> StatusQuery:
    return StatusQuery(
        provider_message_id=pmid,
        type=type,
        to="010-1234-5678",
        requested_at=requested_at,
        scheduled_at=scheduled_at,
    )


@pytest.fixture
async def api() -> AsyncIterator[FakeIwinvApi]:
    fake = FakeIwinvApi(
        api_key=API_KEY, sms_api_key=SMS_KEY, sms_auth_key=SMS_AUTH, sms_company_id=COMPANY
    )
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def client(api: FakeIwinvApi, **kw: Any) -> IwinvProvider:
    options: dict[str, Any] = {
        "api_key": API_KEY,
        "sms_api_key": SMS_KEY,
        "sms_auth_key": SMS_AUTH,
        "sms_company_id": COMPANY,
        "base_url": api.alimtalk_url,
        "sms_base_url": api.sms_url,
        "timeout_s": 5.0,
        "clock": lambda: NOW,
    }
    options.update(kw)
    return IwinvProvider("iwinv", **options)


@pytest.fixture
async def provider(api: FakeIwinvApi) -> AsyncIterator[IwinvProvider]:
    iwinv = client(api)
    try:
        yield iwinv
    finally:
        await iwinv.close()


async def lookup_error(provider: IwinvProvider, q: StatusQuery) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await provider.get_delivery_status(q)
    return info.value


# --- pure mappings --------------------------------------------------------------------------------


def test_kst_dates_are_read_as_utc_plus_9() -> None:
    assert parse_kst_datetime("2024-05-01 12:00:05") == datetime(2024, 5, 1, 3, 0, 5, tzinfo=UTC)
    assert parse_kst_datetime("2024-05-01T03:00:05Z") == datetime(2024, 5, 1, 3, 0, 5, tzinfo=UTC)
    assert parse_kst_datetime("") is None
    assert parse_kst_datetime("soon") is None
    assert parse_kst_datetime(None) is None


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (201, "AUTHENTICATION_FAILED"),
        (206, "AUTHENTICATION_FAILED"),
        (401, "AUTHENTICATION_FAILED"),
        (403, "AUTHENTICATION_FAILED"),
        (429, "RATE_LIMIT_EXCEEDED"),
        (519, "INSUFFICIENT_BALANCE"),
        (404, "TEMPLATE_NOT_FOUND"),
        (501, "TEMPLATE_NOT_FOUND"),
        (502, "INVALID_REQUEST"),
        (517, "INVALID_REQUEST"),
        (540, "INVALID_REQUEST"),
        (518, "PROVIDER_ERROR"),
        (599, "PROVIDER_ERROR"),
        (300, "INVALID_REQUEST"),
    ],
)
def test_alimtalk_body_code_table(code: int, error: str) -> None:
    assert map_iwinv_code(code) == error


@pytest.mark.parametrize(
    ("code", "message", "status"),
    [
        ("06", None, S.DELIVERED),
        ("1000", None, S.DELIVERED),
        ("23", "전송 성공", S.DELIVERED),
        ("05", "처리중", S.PENDING),
        ("07", "전송 대기", S.PENDING),
        ("00", None, S.PENDING),
        ("01", None, S.PENDING),
        (None, None, S.UNKNOWN),
        ("", "", S.UNKNOWN),
        ("23", "결번", S.FAILED),
        (None, "수신 거부", S.FAILED),
    ],
)
def test_sms_status_table(code: str | None, message: str | None, status: TrackingStatus) -> None:
    assert map_sms_history_status(code, message) is status


# --- AlimTalk history over HTTP -------------------------------------------------------------------


async def test_is_a_status_provider(provider: IwinvProvider) -> None:
    assert isinstance(provider, StatusProvider)
    assert provider.supports_status is True


@pytest.mark.parametrize(
    ("code", "name", "send", "receive", "status", "sent", "delivered", "failed"),
    [
        (
            "OK",
            "성공",
            "2024-05-01 12:00:02",
            "2024-05-01 12:00:05",
            S.DELIVERED,
            datetime(2024, 5, 1, 3, 0, 2, tzinfo=UTC),
            datetime(2024, 5, 1, 3, 0, 5, tzinfo=UTC),
            None,
        ),
        (
            "OK",
            None,
            "2024-05-01 12:00:02",
            None,
            S.DELIVERED,
            datetime(2024, 5, 1, 3, 0, 2, tzinfo=UTC),
            datetime(2024, 5, 1, 3, 0, 2, tzinfo=UTC),  # no receiveDate: sendDate
            None,
        ),
        ("K000", "발송 성공", None, None, S.DELIVERED, None, None, None),
        (
            "3018",
            "카카오 미사용 대상",
            "2024-05-01 12:00:02",
            None,
            S.FAILED,
            datetime(2024, 5, 1, 3, 0, 2, tzinfo=UTC),
            None,
            datetime(2024, 5, 1, 3, 0, 2, tzinfo=UTC),
        ),
        (None, None, None, None, S.PENDING, None, None, None),
        ("", "대기", None, None, S.PENDING, None, None, None),
    ],
)
async def test_alimtalk_statuses(
    api: FakeIwinvApi,
    provider: IwinvProvider,
    code: str | None,
    name: str | None,
    send: str | None,
    receive: str | None,
    status: TrackingStatus,
    sent: datetime | None,
    delivered: datetime | None,
    failed: datetime | None,
) -> None:
    api.set_alimtalk_status(17, code, name, send_date=send, receive_date=receive)
    result = await provider.get_delivery_status(query("17"))
    assert result is not None
    assert result.status is status
    assert (result.status_code, result.status_message) == (code or None, name or None)
    assert (result.sent_at, result.delivered_at, result.failed_at) == (sent, delivered, failed)
    assert result.raw is not None and result.raw["seqNo"] == 17


async def test_alimtalk_wire_format(api: FakeIwinvApi, provider: IwinvProvider) -> None:
    api.set_alimtalk_status(17, "OK", "성공", send_date="2024-05-01 12:00:02")
    await provider.get_delivery_status(query("17", scheduled_at=T0 + timedelta(minutes=1)))
    [sent] = api.requests
    assert (sent.method, sent.path) == ("POST", "/alimtalk/api/history/")
    assert sent.headers["AUTH"] == b64(API_KEY)
    assert sent.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert sent.body == {
        "pageNum": 1,
        "pageSize": 15,
        "phone": "01012345678",
        "startDate": "2024-04-30 12:00:00",  # requestedAt - 1 day, in KST
        "endDate": "2024-05-01 12:10:00",  # now, in KST
        "seqNo": 17,
        "reserve": "Y",
    }


async def test_x_forwarded_for_is_sent(api: FakeIwinvApi) -> None:
    iwinv = client(api, x_forwarded_for="203.0.113.7")
    try:
        await iwinv.get_delivery_status(query("17"))
    finally:
        await iwinv.close()
    assert api.requests[0].headers["X-Forwarded-For"] == "203.0.113.7"


async def test_alimtalk_no_entry_is_no_result_yet(
    api: FakeIwinvApi, provider: IwinvProvider
) -> None:
    assert await provider.get_delivery_status(query("17")) is None


async def test_alimtalk_never_attributes_another_message(
    api: FakeIwinvApi, provider: IwinvProvider
) -> None:
    """k-msg falls back to list[0]: another message to the same phone."""
    api.ignore_id_filter = True
    api.set_alimtalk_status(99, "OK", "성공", send_date="2024-05-01 12:00:02")
    assert await provider.get_delivery_status(query("17")) is None
    api.set_alimtalk_status(17, "3018", "실패", send_date="2024-05-01 12:00:03")
    result = await provider.get_delivery_status(query("17"))
    assert result is not None and result.status is S.FAILED


async def test_alimtalk_non_numeric_id_is_invalid_without_a_request(
    api: FakeIwinvApi, provider: IwinvProvider
) -> None:
    error = await lookup_error(provider, query("abc"))
    assert (error.code, error.retryable) == ("INVALID_REQUEST", False)
    assert api.requests == []


async def test_alimtalk_needs_api_key(api: FakeIwinvApi) -> None:
    iwinv = client(api, api_key=None)
    try:
        error = await lookup_error(iwinv, query("17"))
    finally:
        await iwinv.close()
    assert (error.code, error.retryable) == ("INVALID_REQUEST", False)


async def test_alimtalk_bad_key_is_non_retryable_auth_failure(api: FakeIwinvApi) -> None:
    iwinv = client(api, api_key="wrong")
    try:
        error = await lookup_error(iwinv, query("17"))
    finally:
        await iwinv.close()
    assert (error.code, error.retryable) == ("AUTHENTICATION_FAILED", False)
    assert "201" in error.message


@pytest.mark.parametrize(
    ("status", "body", "code", "retryable"),
    [
        (200, {"code": 519, "message": "잔액 부족"}, "INSUFFICIENT_BALANCE", False),
        (200, {"code": 540, "message": "파라미터 오류"}, "INVALID_REQUEST", False),
        (200, {"code": 518, "message": "내부 오류"}, "PROVIDER_ERROR", True),
        (401, {"code": 201, "message": "인증 실패"}, "AUTHENTICATION_FAILED", False),
        (403, None, "AUTHENTICATION_FAILED", False),
        (400, {"code": 540, "message": "파라미터 오류"}, "INVALID_REQUEST", False),
        (400, None, "INVALID_REQUEST", False),
        # k-msg: without a body code the HTTP status goes through the code table.
        (404, None, "TEMPLATE_NOT_FOUND", False),
        (404, "<html>not found</html>", "TEMPLATE_NOT_FOUND", False),
        (400, 519, "INSUFFICIENT_BALANCE", False),  # a bare number as the body is the code
        # k-msg: a bodyless gateway error becomes INVALID_REQUEST and the record UNKNOWN.
        (502, None, "NETWORK_SERVICE_UNAVAILABLE", True),
        (503, None, "NETWORK_SERVICE_UNAVAILABLE", True),
        (504, None, "NETWORK_SERVICE_UNAVAILABLE", True),
        (500, {"code": 540, "message": "?"}, "PROVIDER_ERROR", True),
    ],
)
async def test_alimtalk_error_answers(
    api: FakeIwinvApi,
    provider: IwinvProvider,
    status: int,
    body: Any,
    code: str,
    retryable: bool,
) -> None:
    if isinstance(body, str):
        api.respond_raw_next(status, body)
    else:
        api.fail_next(status, body)
    error = await lookup_error(provider, query("17"))
    assert (error.code, error.retryable) == (code, retryable)
    assert error.http_status == status


async def test_rate_limit_is_retryable(api: FakeIwinvApi, provider: IwinvProvider) -> None:
    api.rate_limit_after = 1
    api.set_alimtalk_status(17, "OK", "성공", send_date="2024-05-01 12:00:02")
    assert await provider.get_delivery_status(query("17")) is not None
    error = await lookup_error(provider, query("17"))
    assert (error.code, error.retryable, error.http_status) == ("RATE_LIMIT_EXCEEDED", True, 429)
    sms_error = await lookup_error(provider, query("R1", MessageType.SMS))
    assert (sms_error.code, sms_error.retryable) == ("RATE_LIMIT_EXCEEDED", True)


@pytest.mark.parametrize(
    "answer", ["<html>maintenance</html>", {"code": 200, "message": "ok"}, {"list": []}]
)
async def test_alimtalk_malformed_answer_is_retryable(
    api: FakeIwinvApi, provider: IwinvProvider, answer: Any
) -> None:
    if isinstance(answer, str):
        api.respond_raw_next(200, answer)
    else:
        api.fail_next(200, answer)
    error = await lookup_error(provider, query("17"))
    assert (error.code, error.retryable) == ("PROVIDER_ERROR", True)


async def test_unsupported_type_is_invalid(api: FakeIwinvApi, provider: IwinvProvider) -> None:
    error = await lookup_error(provider, query("17", MessageType.VOICE))
    assert (error.code, error.retryable) == ("INVALID_REQUEST", False)
    assert api.requests == []


# --- SMS v2 history over HTTP ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "msg", "status"),
    [
        ("06", "전송 성공", S.DELIVERED),
        ("1000", None, S.DELIVERED),
        ("01", "처리중", S.PENDING),
        ("00", None, S.PENDING),
        ("07", "전송 대기", S.PENDING),
        ("23", "결번", S.FAILED),
        (None, None, S.UNKNOWN),
    ],
)
async def test_sms_statuses(
    api: FakeIwinvApi,
    provider: IwinvProvider,
    code: str | None,
    msg: str | None,
    status: TrackingStatus,
) -> None:
    api.set_sms_status("R1", code, msg, send_date="2024-05-01 12:00:02")
    result = await provider.get_delivery_status(query("R1", MessageType.LMS))
    assert result is not None
    assert result.status is status
    assert (result.status_code, result.status_message) == (code, msg)
    sent = datetime(2024, 5, 1, 3, 0, 2, tzinfo=UTC)
    assert result.sent_at == sent
    assert result.delivered_at == (sent if status is S.DELIVERED else None)
    assert result.failed_at == (sent if status is S.FAILED else None)


async def test_sms_status_message_falls_back_to_send_status(
    api: FakeIwinvApi, provider: IwinvProvider
) -> None:
    item = api.set_sms_status("R1", "06", None)
    item["sendStatus"] = "성공"
    result = await provider.get_delivery_status(query("R1", MessageType.SMS))
    assert result is not None and result.status_message == "성공"


async def test_sms_wire_format(api: FakeIwinvApi, provider: IwinvProvider) -> None:
    late = datetime(2024, 4, 30, 20, 0, tzinfo=UTC)  # 2024-05-01 05:00 KST
    await provider.get_delivery_status(query("R1", MessageType.MMS, requested_at=late))
    [sent] = api.requests
    assert (sent.method, sent.path) == ("POST", "/sms/api/history/")
    assert sent.headers["secret"] == b64(f"{SMS_KEY}&{SMS_AUTH}")
    assert sent.body == {
        "version": "1.0",
        "companyid": COMPANY,
        "startDate": "2024-04-30",  # KST date of requestedAt - 1 day (UTC would say 04-29)
        "endDate": "2024-05-01",
        "requestNo": "R1",
        "pageNum": 1,
        "pageSize": 15,
        "phone": "01012345678",
    }


async def test_sms_legacy_secret(api: FakeIwinvApi) -> None:
    iwinv = client(api, sms_api_key=None)
    try:
        with pytest.raises(ProviderError):
            await iwinv.get_delivery_status(query("R1", MessageType.SMS))
    finally:
        await iwinv.close()
    assert api.requests[0].headers["secret"] == b64(f"{API_KEY}&{SMS_AUTH}")


async def test_sms_no_match_is_no_result_yet(api: FakeIwinvApi, provider: IwinvProvider) -> None:
    api.ignore_id_filter = True
    api.set_sms_status("OTHER", "06", "전송 성공", send_date="2024-05-01 12:00:02")
    assert await provider.get_delivery_status(query("R1", MessageType.SMS)) is None


async def test_sms_bad_secret_is_non_retryable_auth_failure(api: FakeIwinvApi) -> None:
    iwinv = client(api, sms_auth_key="wrong")
    try:
        error = await lookup_error(iwinv, query("R1", MessageType.SMS))
    finally:
        await iwinv.close()
    # k-msg: PROVIDER_ERROR (retryable), so a wrong key is retried until tracking times out.
    assert (error.code, error.retryable) == ("AUTHENTICATION_FAILED", False)
    assert "202" in error.message


@pytest.mark.parametrize(
    ("status", "body", "code", "retryable"),
    [
        (200, {"resultCode": 50, "message": "자동 충전 한도 초과"}, "INSUFFICIENT_BALANCE", False),
        (200, {"resultCode": "43", "message": "날짜 형식"}, "INVALID_REQUEST", False),
        (200, {"resultCode": 1, "message": "실패"}, "PROVIDER_ERROR", True),
        (200, {"resultCode": 0, "message": "ok"}, "PROVIDER_ERROR", True),  # no list
        (200, {"message": "?"}, "PROVIDER_ERROR", True),
        (503, None, "NETWORK_SERVICE_UNAVAILABLE", True),
        (500, {"resultCode": 1}, "PROVIDER_ERROR", True),
        # k-msg: retryable PROVIDER_ERROR; a missing SMS history API is not retried here.
        (404, None, "INVALID_REQUEST", False),
    ],
)
async def test_sms_error_answers(
    api: FakeIwinvApi,
    provider: IwinvProvider,
    status: int,
    body: Any,
    code: str,
    retryable: bool,
) -> None:
    api.fail_next(status, body)
    error = await lookup_error(provider, query("R1", MessageType.SMS))
    assert (error.code, error.retryable) == (code, retryable)


async def test_sms_configuration_errors(api: FakeIwinvApi) -> None:
    no_company = client(api, sms_company_id=None)
    no_keys = client(api, api_key=None, sms_api_key=None, sms_auth_key=None)
    try:
        for iwinv in (no_company, no_keys):
            error = await lookup_error(iwinv, query("R1", MessageType.SMS))
            assert (error.code, error.retryable) == ("INVALID_REQUEST", False)
    finally:
        await no_company.close()
        await no_keys.close()
    assert api.requests == []


async def test_sms_window_longer_than_90_days_is_invalid(
    api: FakeIwinvApi, provider: IwinvProvider
) -> None:
    old = NOW - timedelta(days=90)
    error = await lookup_error(provider, query("R1", MessageType.SMS, requested_at=old))
    assert (error.code, error.retryable) == ("INVALID_REQUEST", False)
    assert api.requests == []


async def test_unreachable_server_is_retryable_network_error(api: FakeIwinvApi) -> None:
    iwinv = client(api)
    await api.stop()
    try:
        error = await lookup_error(iwinv, query("17"))
    finally:
        await iwinv.close()
    assert (error.code, error.retryable) == ("NETWORK_ERROR", True)


# --- webhook --------------------------------------------------------------------------------------

TOKEN = "whsec-iwinv-1"
RECEIVED = datetime(2024, 5, 1, 3, 5, tzinfo=UTC)
ALIMTALK_REPORT = {
    "seqNo": 17,
    "phone": "01012345678",
    "templateCode": "TPL_001",
    "statusCode": "OK",
    "statusCodeName": "성공",
    "sendDate": "2024-05-01 12:00:02",
    "receiveDate": "2024-05-01 12:00:05",
}
SMS_REPORT = {
    "requestNo": "R1",
    "companyid": COMPANY,
    "msgType": "SMS",
    "phone": "01012345678",
    "sendStatusCode": "23",
    "sendStatusMsg": "결번",
    "sendDate": "2024-05-01 12:00:03",
}


@pytest.fixture
def adapter() -> IwinvWebhookAdapter:
    return IwinvWebhookAdapter("iwinv", webhook_secret=TOKEN)


def test_webhook_adapter_protocol(adapter: IwinvWebhookAdapter) -> None:
    assert isinstance(adapter, WebhookAdapter)


def test_verify(adapter: IwinvWebhookAdapter) -> None:
    adapter.verify({"X-Webhook-Token": TOKEN}, b"{}", RECEIVED)
    adapter.verify({"authorization": f"bearer {TOKEN}"}, b"{}", RECEIVED)
    for headers in ({}, {"X-Webhook-Token": "nope"}, {"Authorization": "Bearer nope"}):
        with pytest.raises(WebhookRejected) as info:
            adapter.verify(headers, b"{}", RECEIVED)
        assert info.value.status == 401
    with pytest.raises(WebhookRejected) as unset:
        IwinvWebhookAdapter("iwinv", webhook_secret=None).verify(
            {"X-Webhook-Token": TOKEN}, b"{}", RECEIVED
        )
    assert unset.value.status == 401


def test_parse_single_alimtalk_report(adapter: IwinvWebhookAdapter) -> None:
    [parsed] = adapter.parse({}, json.dumps(ALIMTALK_REPORT).encode(), RECEIVED)
    assert parsed.event_id == "iwinv:alimtalk:17:OK:2024-05-01 12:00:05"
    assert (parsed.provider_id, parsed.provider_message_id) == ("iwinv", "17")
    assert parsed.status is S.DELIVERED
    assert parsed.delivered_at == datetime(2024, 5, 1, 3, 0, 5, tzinfo=UTC)
    assert parsed.received_at == RECEIVED


def test_parse_batch(adapter: IwinvWebhookAdapter) -> None:
    for body in ([ALIMTALK_REPORT, SMS_REPORT], {"list": [ALIMTALK_REPORT, SMS_REPORT]}):
        raw = json.dumps(body).encode()
        reports = adapter.parse({}, raw, RECEIVED)
        assert [(r.provider_message_id, r.status) for r in reports] == [
            ("17", S.DELIVERED),
            ("R1", S.FAILED),
        ]
        assert [r.event_id for r in reports] == [
            "iwinv:alimtalk:17:OK:2024-05-01 12:00:05",
            "iwinv:sms:R1:23:2024-05-01 12:00:03",
        ]
        assert reports[1].failed_at == datetime(2024, 5, 1, 3, 0, 3, tzinfo=UTC)
        assert [r.event_id for r in adapter.parse({}, raw, RECEIVED)] == [
            r.event_id for r in reports
        ]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b"[42]",
        json.dumps({"phone": "01012345678", "statusCode": "OK"}).encode(),
        json.dumps([ALIMTALK_REPORT, {**SMS_REPORT, "requestNo": ""}]).encode(),
    ],
)
def test_parse_malformed_is_400(adapter: IwinvWebhookAdapter, body: bytes) -> None:
    with pytest.raises(WebhookRejected) as info:
        adapter.parse({}, body, RECEIVED)
    assert info.value.status == 400


@pytest.mark.parametrize(
    "date",
    [
        "0001-01-01 00:00:00",
        "9999-12-31T23:59:59-01:00",
        "1969-12-31 23:59:59",
        "9500-01-01 00:00:00",
    ],
)
def test_a_date_out_of_range_is_dropped_not_a_crash(
    adapter: IwinvWebhookAdapter, date: str
) -> None:
    """``0001-01-01 00:00:00`` KST is before datetime.min in UTC (OverflowError before)."""
    assert parse_kst_datetime(date) is None
    [parsed] = adapter.parse({}, json.dumps({**SMS_REPORT, "sendDate": date}).encode(), RECEIVED)
    assert (parsed.status, parsed.sent_at, parsed.failed_at) == (S.FAILED, None, None)
    [parsed] = adapter.parse(
        {}, json.dumps({**ALIMTALK_REPORT, "receiveDate": date}).encode(), RECEIVED
    )
    assert parsed.delivered_at == datetime(2024, 5, 1, 3, 0, 2, tzinfo=UTC)  # sendDate


def test_json_nested_too_deeply_and_too_many_reports_are_400(adapter: IwinvWebhookAdapter) -> None:
    for body in (
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps({"list": [ALIMTALK_REPORT] * (MAX_REPORTS_PER_REQUEST + 1)}).encode(),
    ):
        with pytest.raises(WebhookRejected) as info:
            adapter.parse({}, body, RECEIVED)
        assert info.value.status == 400
    reports = [{**ALIMTALK_REPORT, "seqNo": i} for i in range(MAX_REPORTS_PER_REQUEST)]
    assert len(adapter.parse({}, json.dumps(reports).encode(), RECEIVED)) == len(reports)


def test_a_long_derived_event_id_is_bounded(adapter: IwinvWebhookAdapter) -> None:
    body = json.dumps({**SMS_REPORT, "requestNo": "R" * 500}).encode()
    [parsed] = adapter.parse({}, body, RECEIVED)
    assert len(parsed.event_id) == MAX_EVENT_ID_CHARS
    assert adapter.parse({}, body, RECEIVED)[0].event_id == parsed.event_id


# --- settings and registry ------------------------------------------------------------------------


def test_settings_and_registry_build_iwinv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "DELIVERYTRACK_PROVIDERS",
        json.dumps(
            {
                "iwinv": {
                    "kind": "iwinv",
                    "apiKey": API_KEY,
                    "smsApiKey": SMS_KEY,
                    "smsAuthKey": SMS_AUTH,
                    "smsCompanyId": COMPANY,
                    "xForwardedFor": "203.0.113.7",
                    "webhookSecret": TOKEN,
                },
                "none": {"kind": "none"},
            }
        ),
    )
    settings = Settings()
    provider = build_provider("iwinv", settings.providers["iwinv"], default_timeout_s=7.0)
    assert isinstance(provider, IwinvProvider)
    assert provider.base_url == "https://alimtalk.bizservice.iwinv.kr"
    assert provider.sms_base_url == "https://sms.bizservice.iwinv.kr"
    assert provider.timeout_s == 7.0
    adapters = build_webhook_adapters(settings)
    assert set(adapters) == {"iwinv"}
    assert isinstance(adapters["iwinv"], IwinvWebhookAdapter)


def test_registry_refuses_iwinv_without_any_key() -> None:
    with pytest.raises(ValueError, match="iwinv"):
        build_provider("iwinv", ProviderConfig(kind="iwinv"), 10.0)
