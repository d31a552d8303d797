"""The webhook ingress with personal data on: phone numbers in a report are masked before it
is published, whatever key, depth or spelling (it has no record to compare with), for every
adapter; ``DELIVERYTRACK_WEBHOOK_RAW`` decides what is kept of ``raw``; a derived eventId
gives nothing away; refusals are logged without the number. The poller does the same with
what a status API answers (payload, status text, error text, an adapter's crash)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
import pytest

from deliverytrack.models.codec import encode
from deliverytrack.models.enums import TrackingStatus
from deliverytrack.models.events import ProviderReportReceived, ProviderStatus
from deliverytrack.models.policy import PiiPolicy, WebhookRawMode
from deliverytrack.streams.polling.poller import Poller
from deliverytrack.streams.providers.base import ProviderError, StatusQuery, WebhookRejected
from deliverytrack.streams.providers.iwinv import IwinvWebhookAdapter
from deliverytrack.streams.webhooks.ingress import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    GenericWebhookAdapter,
    WebhookIngress,
    sign,
)
from deliverytrack.tables.pii import mask_phone_numbers
from tests.factories import T0
from tests.unit.streams.test_poller_pii import poll_request
from tests.unit.streams.test_report_protection import leaks
from tests.unit.tables.test_pii import pii

SECRET = "hook-secret"
REPORT = {
    "providerMessageId": "pm-1",
    "status": "DELIVERED",
    "statusMessage": "delivered to 010-2345-6789",
    "raw": {
        "memo": "회신번호 031-987-6543, 수신 010 2345 6789",
        "rcv": {"list": [{"no": "01023456789"}, {"no": 1023456789}]},
        "code": "0",
    },
}


class Published(list[bytes]):
    async def __call__(self, topic: str, key: bytes, value: bytes) -> Any:
        self.append(key + b"\n" + value)
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def post(
    body: Any,
    policy: PiiPolicy,
    raw_mode: WebhookRawMode = "masked",
) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    published = Published()
    adapter = GenericWebhookAdapter("gen", [SECRET], 300_000, policy)
    ingress = WebhookIngress({"gen": adapter}, published, "t.pw", pii=policy, raw_mode=raw_mode)
    data = json.dumps(body).encode()
    stamp = int(T0.timestamp())
    headers = {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(SECRET, stamp, data)}
    status, answer = await ingress.handle("gen", headers, data, T0)
    for value in published:
        if policy.protects_plain and raw_mode != "full":
            assert not leaks(value), leaks(value)
    return status, answer, [json.loads(value.split(b"\n", 1)[1]) for value in published]


async def test_numbers_under_any_key_are_masked_before_the_report_is_published() -> None:
    status, answer, (report,) = await post(REPORT, pii())
    assert status == 200, answer
    assert report["raw"] == {
        "memo": "회신번호 031*******43, 수신 010********89",
        "rcv": {"list": [{"no": "010******89"}, {"no": "102*****89"}]},
        "code": "0",
    }
    assert report["statusMessage"] == "delivered to 010********89"


async def test_a_report_without_raw_keeps_itself_masked_as_raw() -> None:
    body = {k: v for k, v in REPORT.items() if k != "raw"}
    status, answer, (report,) = await post(body, pii())
    assert status == 200, answer
    assert report["raw"]["statusMessage"] == "delivered to 010********89"


@pytest.mark.parametrize(
    ("raw_mode", "protected", "expected"),
    [
        ("none", True, None),
        ("none", False, None),
        ("full", True, REPORT["raw"]),
        ("masked", False, REPORT["raw"]),
    ],
)
async def test_what_is_kept_of_raw_is_the_operator_s_choice(
    raw_mode: WebhookRawMode, protected: bool, expected: Any
) -> None:
    _, _, (report,) = await post(REPORT, pii() if protected else PiiPolicy(), raw_mode)
    assert report.get("raw") == expected


async def test_a_derived_event_id_cannot_be_used_to_guess_the_number() -> None:
    """Without an eventId, one is derived from the report's digest. A digest of the plain
    report would confirm a guess of the six digits the mask hides; under protection it is the
    digest of the masked report, and the same report still gets the same id."""
    _, _, (first,) = await post(REPORT, pii())
    _, _, (again,) = await post(REPORT, pii())
    assert first["eventId"] == again["eventId"]
    canonical = orjson.dumps(mask_phone_numbers(REPORT), option=orjson.OPT_SORT_KEYS)
    assert first["eventId"].endswith(hashlib.sha256(canonical).hexdigest()[:24])
    plain = hashlib.sha256(orjson.dumps(REPORT, option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert not first["eventId"].endswith(plain[:24])
    _, _, (unprotected,) = await post(REPORT, PiiPolicy())
    assert unprotected["eventId"].endswith(plain[:24])  # unchanged with protection off


async def test_native_adapters_reports_are_masked_too() -> None:
    published = Published()
    adapter = IwinvWebhookAdapter("iwinv", webhook_secret=SECRET)
    ingress = WebhookIngress({"iwinv": adapter}, published, "t.pw", pii=pii())
    body = {
        "list": [
            {
                "seqNo": 2001,
                "statusCode": "OK",
                "statusCodeName": "성공",
                "memo": {"customer": "010-2345-6789"},
                "sendDate": "2026-11-24 10:00:00",
            }
        ]
    }
    status, _ = await ingress.handle("iwinv", {"X-Webhook-Token": SECRET}, orjson.dumps(body), T0)
    assert status == 200
    (value,) = published
    assert not leaks(value)
    assert json.loads(value.split(b"\n", 1)[1])["raw"]["memo"] == {"customer": "010********89"}


class Refusing:
    provider_id = "gen"

    def verify(self, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        return None

    def parse(
        self, headers: Mapping[str, str], body: bytes, received_at: datetime
    ) -> list[ProviderReportReceived]:
        raise WebhookRejected(400, f"report 0: bad input {body.decode()!r}")


async def test_a_refusal_is_logged_without_the_number(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    ingress = WebhookIngress({"gen": Refusing()}, Published(), "t.pw", pii=pii())
    status, answer = await ingress.handle("gen", {}, b"010-2345-6789", T0)
    assert status == 400
    assert "010-2345-6789" in answer["error"]  # the caller is told what it sent
    assert "refused" in caplog.text and not leaks(caplog.text.encode())


class TalkativeProvider:
    """A status API whose answers quote the number: in free text, in its error, in a crash."""

    provider_id = "iwinv"
    supports_status = True

    def __init__(self, answer: str) -> None:
        self.answer = answer

    async def get_delivery_status(self, query: StatusQuery) -> ProviderStatus | None:
        if self.answer == "error":
            raise ProviderError("INVALID_REQUEST", "수신번호 010-2345-6789 오류", http_status=400)
        if self.answer == "crash":
            raise ValueError("cannot parse 010-2345-6789")
        return ProviderStatus(
            status=TrackingStatus.FAILED,
            status_message="수신번호 010-2345-6789 결번",
            raw={"detail": {"note": "sent to 010 2345 6789"}},
        )

    async def close(self) -> None:
        return None


@pytest.mark.parametrize("answer", ["result", "error", "crash"])
async def test_the_poller_masks_numbers_in_what_a_provider_answers(
    answer: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    provider = TalkativeProvider(answer)
    poller = Poller({"iwinv": provider}, timeout_s=5, clock=lambda: T0, pii=pii())
    observed = await poller.poll(poll_request(pii()))
    assert not leaks(encode(observed)) and not leaks(caplog.text.encode())
    assert b"010********89" in encode(observed)
