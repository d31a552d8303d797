"""SOLAPI and IWINV on the real broker: their status APIs (polling) and their webhooks drive
records to DELIVERED and FAILED with the mapped codes and messages kept on the record.
The providers are local HTTP servers that answer like the real APIs (tests/fakes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import orjson
import pytest

from deliverytrack.models.enums import MessageType
from deliverytrack.models.events import SendRecorded
from tests.factories import next_event_id
from tests.fakes.iwinv_api import FakeIwinvApi
from tests.fakes.solapi_api import FakeSolapiApi
from tests.integration.support import FAST_POLLING

TOKEN = "provider-hook-token"


@pytest.fixture
async def solapi() -> AsyncIterator[FakeSolapiApi]:
    server = FakeSolapiApi()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def iwinv() -> AsyncIterator[FakeIwinvApi]:
    server = FakeIwinvApi()
    await server.start()
    yield server
    await server.stop()


def native_settings(settings_factory: Any, solapi: FakeSolapiApi, iwinv: FakeIwinvApi) -> Any:
    return settings_factory(
        polling=FAST_POLLING,
        providers={
            "solapi": {
                "kind": "solapi",
                "baseUrl": solapi.base_url,
                "apiKey": "NCSTESTKEY",
                "apiSecret": "test-secret-0123456789",
                "webhookSecret": TOKEN,
            },
            "iwinv": {
                "kind": "iwinv",
                "baseUrl": iwinv.alimtalk_url,
                "smsBaseUrl": iwinv.sms_url,
                "apiKey": "iwinv-alimtalk-key",
                "smsApiKey": "iwinv-sms-key",
                "smsAuthKey": "iwinv-sms-auth",
                "smsCompanyId": "company-1",
                "webhookSecret": TOKEN,
            },
        },
    )


def sent(message_id: str, provider: str, pmid: str, type: MessageType) -> SendRecorded:
    return SendRecorded(
        event_id=next_event_id("send"),
        message_id=message_id,
        provider_id=provider,
        provider_message_id=pmid,
        type=type,
        to="01012345678",
        requested_at=datetime.now(UTC),
    )


def kst(moment: datetime) -> str:
    """IWINV's dates are Korea time."""
    return moment.astimezone(timezone(timedelta(hours=9))).strftime("%Y-%m-%d %H:%M:%S")


async def test_polling_solapi_and_iwinv_reaches_delivered_and_failed_with_their_codes(
    settings_factory: Any,
    worker_factory: Any,
    kafka_io_factory: Any,
    solapi: FakeSolapiApi,
    iwinv: FakeIwinvApi,
) -> None:
    settings = native_settings(settings_factory, solapi, iwinv)
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    solapi.set_status("M4V-D", "4000", "수신완료", dateReceived="2026-11-24T01:00:07.000Z")
    solapi.set_status(
        "M4V-F", "3104", "카카오톡 미사용자", dateCompleted="2026-11-24T01:00:08.000Z"
    )
    now = datetime.now(UTC)
    iwinv.set_alimtalk_status(1001, "OK", "성공", send_date=kst(now), receive_date=kst(now))
    iwinv.set_sms_status("R-2", "03", "수신거부", send_date=kst(now))
    sends = [
        sent("p-sol-d", "solapi", "M4V-D", MessageType.SMS),
        sent("p-sol-f", "solapi", "M4V-F", MessageType.ALIMTALK),
        sent("p-iw-d", "iwinv", "1001", MessageType.ALIMTALK),
        sent("p-iw-f", "iwinv", "R-2", MessageType.SMS),
    ]
    for event in sends:
        await io.send(io.topics.send_results, event.message_id, event)
    final = {"DELIVERED", "FAILED"}
    records = {
        e.message_id: await worker.arecord(e.message_id, lambda r: r["status"] in final, 30)
        for e in sends
    }
    assert records["p-sol-d"]["status"] == "DELIVERED"
    assert records["p-sol-d"]["providerStatusCode"] == "4000"
    assert records["p-sol-d"]["providerStatusMessage"] == "수신완료"
    assert records["p-sol-f"]["status"] == "FAILED"
    assert records["p-sol-f"]["providerStatusCode"] == "3104"
    assert records["p-sol-f"]["providerStatusMessage"] == "카카오톡 미사용자"
    assert records["p-iw-d"]["status"] == "DELIVERED"
    assert records["p-iw-f"]["status"] == "FAILED"
    assert records["p-iw-f"]["providerStatusCode"] == "03"
    for record in records.values():
        assert record["statusHistory"][-1]["source"] == "provider"
        assert "nextCheckAt" not in record  # terminal: never polled again
    assert worker.stop() == 0


async def test_solapi_and_iwinv_webhooks_reach_delivered_and_failed(
    settings_factory: Any,
    worker_factory: Any,
    kafka_io_factory: Any,
    solapi: FakeSolapiApi,
    iwinv: FakeIwinvApi,
) -> None:
    settings = native_settings(settings_factory, solapi, iwinv)
    settings = settings.model_copy(
        update={"polling": settings.polling.model_copy(update={"initial_delay_ms": 3_600_000})}
    )
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    sends = [
        sent("w-sol-d", "solapi", "M4V-W1", MessageType.ALIMTALK),
        sent("w-sol-f", "solapi", "M4V-W2", MessageType.ALIMTALK),
        sent("w-iw-d", "iwinv", "2001", MessageType.ALIMTALK),
        sent("w-iw-f", "iwinv", "R-9", MessageType.SMS),
    ]
    for event in sends:
        await io.send(io.topics.send_results, event.message_id, event)
    solapi_body = orjson.dumps(
        [
            {
                "messageId": "M4V-W1",
                "statusCode": "4000",
                "statusMessage": "수신완료",
                "dateReceived": "2026-11-24T01:00:07.000Z",
                "dateUpdated": "2026-11-24T01:00:08.000Z",
            },
            {
                "messageId": "M4V-W2",
                "statusCode": "3104",
                "statusMessage": "카카오톡 미사용자",
                "dateUpdated": "2026-11-24T01:00:09.000Z",
            },
        ]
    )
    iwinv_body = orjson.dumps(
        {
            "list": [
                {
                    "seqNo": 2001,
                    "phone": "01012345678",
                    "statusCode": "OK",
                    "statusCodeName": "성공",
                    "sendDate": "2026-11-24 10:00:00",
                    "receiveDate": "2026-11-24 10:00:05",
                },
                {
                    "requestNo": "R-9",
                    "phone": "01012345678",
                    "sendStatusCode": "03",
                    "sendStatusMsg": "수신거부",
                    "sendDate": "2026-11-24 10:00:06",
                },
            ]
        }
    )
    async with aiohttp.ClientSession() as session:
        base = worker.webhook_url  # the public listener
        # Without the token: refused. The token in the URL (for consoles that take only a URL).
        async with session.post(f"{base}/webhooks/solapi", data=solapi_body) as response:
            assert response.status == 401
        async with session.post(f"{base}/webhooks/solapi?token={TOKEN}", data=solapi_body) as r:
            assert r.status == 200, await r.text()
        headers = {"X-Webhook-Token": TOKEN}
        async with session.post(f"{base}/webhooks/iwinv", data=iwinv_body, headers=headers) as r:
            assert r.status == 200, await r.text()
    final = {"DELIVERED", "FAILED"}
    records = {
        e.message_id: await worker.arecord(e.message_id, lambda r: r["status"] in final)
        for e in sends
    }
    assert records["w-sol-d"]["status"] == "DELIVERED"
    assert records["w-sol-d"]["providerStatusCode"] == "4000"
    assert records["w-sol-f"]["status"] == "FAILED"
    assert records["w-sol-f"]["providerStatusMessage"] == "카카오톡 미사용자"
    assert records["w-iw-d"]["status"] == "DELIVERED"
    assert records["w-iw-f"]["status"] == "FAILED"
    assert records["w-iw-f"]["providerStatusCode"] == "03"
    for record in records.values():
        assert record["statusHistory"][-1]["source"] == "webhook"
    assert worker.stop() == 0
