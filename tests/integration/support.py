"""Helpers for polling tests: the simulated provider client, fast polling settings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp

from deliverytrack.models.enums import MessageType
from deliverytrack.models.events import SendRecorded
from deliverytrack.streams.providers.simulated import SimulatedProviderServer
from tests.factories import next_event_id

FAST_POLLING = {
    "intervalMs": 100,
    "initialDelayMs": 300,
    "backoffMs": [400, 800, 1200],
    "providerTimeoutMs": 3_000,
    "leaseMs": 10_000,
    "maxTrackingDurationMs": 60_000,
}


class Provider:
    """The simulated provider on loopback, and a client to set up messages and read stats."""

    def __init__(self, server: SimulatedProviderServer, base_url: str) -> None:
        self.server = server
        self.base_url = base_url
        self.session = aiohttp.ClientSession()

    async def accept(self, **body: Any) -> str:
        body.setdefault("to", "01012345678")
        body.setdefault("type", "SMS")
        async with self.session.post(f"{self.base_url}/v1/messages", json=body) as response:
            assert response.status == 201, await response.text()
            provider_message_id: str = (await response.json())["providerMessageId"]
            return provider_message_id

    async def stats(self) -> dict[str, Any]:
        async with self.session.get(f"{self.base_url}/v1/stats") as response:
            result: dict[str, Any] = await response.json()
            return result

    async def calls(self, provider_message_id: str) -> list[datetime]:
        times = (await self.stats())["statusCallTimes"].get(provider_message_id, [])
        return [datetime.fromisoformat(t) for t in times]


def polling_settings(settings_factory: Any, provider: Provider, **polling: Any) -> Any:
    return settings_factory(
        polling={**FAST_POLLING, **polling},
        providers={
            "sim": {"kind": "simulated", "baseUrl": provider.base_url},
            "legacy": {"kind": "none"},
        },
    )


def send(message_id: str, provider_message_id: str, provider_id: str = "sim") -> SendRecorded:
    return SendRecorded(
        event_id=next_event_id("send"),
        message_id=message_id,
        provider_id=provider_id,
        provider_message_id=provider_message_id,
        type=MessageType.SMS,
        to="01012345678",
        requested_at=datetime.now(UTC),
    )
