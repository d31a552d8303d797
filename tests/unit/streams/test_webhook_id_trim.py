"""A report's providerMessageId is trimmed like a send result's (the fold trims it, k-msg):
a padded id is keyed, and so correlated, like the record's; a blank one is refused."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from deliverytrack.streams.providers.solapi import SolapiWebhookAdapter
from deliverytrack.streams.webhooks.ingress import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    GenericWebhookAdapter,
    WebhookIngress,
    sign,
)

NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)


class Published(list[bytes]):
    async def __call__(self, topic: str, key: bytes, value: bytes) -> Any:
        self.append(key)
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _headers(provider_id: str, body: bytes) -> dict[str, str]:
    if provider_id == "gen":
        stamp = int(NOW.timestamp())
        return {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign("s", stamp, body)}
    return {"X-Webhook-Token": "t"}


async def _handle(provider_id: str, body: bytes) -> tuple[int, list[bytes]]:
    published = Published()
    adapters = {
        "gen": GenericWebhookAdapter("gen", ["s"], 300_000),
        "sol": SolapiWebhookAdapter("sol", webhook_secret="t"),
    }
    ingress = WebhookIngress(adapters, published, "t.pw")
    status, _ = await ingress.handle(provider_id, _headers(provider_id, body), body, NOW)
    return status, list(published)


@pytest.mark.parametrize(
    ("provider_id", "body"),
    [
        ("gen", b'{"providerMessageId": " M1 ", "status": "DELIVERED"}'),
        ("sol", b'[{"messageId": " M1 ", "statusCode": "4000"}]'),
    ],
)
async def test_a_padded_id_is_keyed_like_the_record(provider_id: str, body: bytes) -> None:
    assert await _handle(provider_id, body) == (200, [f"{provider_id}:M1".encode()])


@pytest.mark.parametrize(
    ("provider_id", "body"),
    [
        ("gen", b'{"providerMessageId": "  ", "status": "DELIVERED"}'),
        ("sol", b'[{"messageId": "  ", "statusCode": "4000"}]'),
    ],
)
async def test_a_blank_id_is_refused(provider_id: str, body: bytes) -> None:
    assert await _handle(provider_id, body) == (400, [])
