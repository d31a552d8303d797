"""The poller with personal data on: it decrypts ``toEncrypted`` for the provider's query and
masks phone numbers in the provider's payload before the observation is published; the
webhook ingress masks phone-ish fields of reports before publishing them."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from deliverytrack.models.codec import encode
from deliverytrack.models.enums import TrackingStatus
from deliverytrack.models.events import PollRequested, ProviderStatus
from deliverytrack.models.policy import PiiPolicy
from deliverytrack.streams.polling.poller import Poller
from deliverytrack.streams.providers.base import StatusQuery
from deliverytrack.streams.webhooks.ingress import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    GenericWebhookAdapter,
    WebhookIngress,
    sign,
)
from deliverytrack.tables.fold import fold
from tests.factories import T0, due_check_factory, send_recorded_factory
from tests.unit.tables.test_pii import K2, pii, policy_with


class CapturingProvider:
    provider_id = "iwinv"
    supports_status = True

    def __init__(self) -> None:
        self.queries: list[StatusQuery] = []

    async def get_delivery_status(self, query: StatusQuery) -> ProviderStatus | None:
        self.queries.append(query)
        raw = {"seqNo": 7, "phone": query.to, "other": "010 1234 5678"}
        return ProviderStatus(status=TrackingStatus.DELIVERED, raw=raw)

    async def close(self) -> None:
        return None


def poll_request(policy: PiiPolicy) -> PollRequested:
    record, _ = fold(None, send_recorded_factory(provider_id="iwinv"), policy_with(policy))
    assert record is not None
    _, (request,) = fold(
        record, due_check_factory(record, T0 + timedelta(seconds=31)), policy_with(policy)
    )
    assert isinstance(request, PollRequested)
    return request


async def test_the_poller_queries_with_the_decrypted_number_and_publishes_it_masked() -> None:
    provider = CapturingProvider()
    poller = Poller({"iwinv": provider}, timeout_s=5, clock=lambda: T0, pii=pii())
    observed = await poller.poll(poll_request(pii()))
    assert [q.to for q in provider.queries] == ["01012345678"]
    assert observed.outcome == "result" and observed.result is not None
    assert observed.result.raw == {"seqNo": 7, "phone": "010******78", "other": "010********78"}
    assert b"01012345678" not in encode(observed)


async def test_an_undecryptable_number_is_a_retryable_crypto_error() -> None:
    provider = CapturingProvider()
    wrong = PiiPolicy.model_validate(
        {
            "enabled": True,
            "activeKid": "k1",
            "hashKeys": {"k1": "x"},
            "encryptionKeys": {"k1": K2},
        }
    )
    poller = Poller({"iwinv": provider}, timeout_s=5, clock=lambda: T0, pii=wrong)
    observed = await poller.poll(poll_request(pii()))
    assert provider.queries == []
    assert observed.outcome == "error" and observed.error is not None
    assert observed.error.code == "CRYPTO_DECRYPT_FAILED" and observed.error.retryable


async def test_the_webhook_ingress_masks_phone_fields_of_reports() -> None:
    published: list[bytes] = []

    async def publish(topic: str, key: bytes, value: bytes) -> Any:
        published.append(value)
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    adapter = GenericWebhookAdapter("gen", ["hook-secret"], 300_000)
    ingress = WebhookIngress({"gen": adapter}, publish, "t.provider-webhooks", pii=pii())
    body = {
        "eventId": "r-1",
        "providerMessageId": "pm-1",
        "status": "DELIVERED",
        "raw": {"receiver": "010-1234-5678", "code": "0"},
    }
    raw = json.dumps(body).encode()
    stamp = int(T0.timestamp())
    headers = {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign("hook-secret", stamp, raw)}
    status, answer = await ingress.handle("gen", headers, raw, T0)
    assert status == 200, answer
    (value,) = published
    assert json.loads(value)["raw"] == {"receiver": "010********78", "code": "0"}
