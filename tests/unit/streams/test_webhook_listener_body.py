"""The webhook listener's body limit follows the ingress: a request of up to 1,000 reports
that the ingress would accept is not refused by aiohttp's default 1 MiB body limit first."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from deliverytrack.streams.providers.solapi import SolapiWebhookAdapter
from deliverytrack.streams.webhooks.ingress import WebhookIngress
from deliverytrack.streams.webhooks.listener import webhook_application

HEADERS = {"X-Webhook-Token": "t", "Content-Type": "application/json"}


async def _acked(topic: str, key: bytes, value: bytes) -> Any:
    done = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


def _ingress(max_report_bytes: int) -> WebhookIngress:
    adapter = SolapiWebhookAdapter("sol", webhook_secret="t")
    return WebhookIngress({"sol": adapter}, _acked, "t.pw", max_report_bytes=max_report_bytes)


async def _post(ingress: WebhookIngress, body: bytes) -> tuple[int, dict[str, Any]]:
    async with TestClient(TestServer(webhook_application(ingress, lambda: True))) as client:
        response = await client.post("/webhooks/sol", data=body, headers=HEADERS)
        return response.status, await response.json()


async def test_a_report_within_max_input_bytes_is_not_refused_by_the_body_limit() -> None:
    report = {"messageId": "M1", "statusCode": "4000", "text": "x" * 1_500_000}
    status, answer = await _post(_ingress(4_194_304), json.dumps(report).encode())
    assert (status, answer["accepted"]) == (200, 1)


async def test_a_body_larger_than_the_ingress_accepts_is_413_as_json() -> None:
    report = {"messageId": "M1", "statusCode": "4000", "text": "x" * 1_500_000}
    status, answer = await _post(_ingress(1_048_576), json.dumps(report).encode())
    assert status == 413
    assert "error" in answer
