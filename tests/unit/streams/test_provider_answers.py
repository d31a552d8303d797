"""Hostile provider answers, for every status client (generic, SOLAPI, IWINV AlimTalk and SMS):
a redirect is not followed (it would send our keys and a request elsewhere)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from aiohttp import web

from deliverytrack.models.enums import MessageType
from deliverytrack.streams.providers.base import (
    ProviderError,
    StatusProvider,
    StatusQuery,
)
from deliverytrack.streams.providers.iwinv import IwinvProvider
from deliverytrack.streams.providers.simulated import SimulatedProvider
from deliverytrack.streams.providers.solapi import SolapiProvider

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NOW = datetime(2024, 5, 1, 3, 10, tzinfo=UTC)


@dataclass
class Site:
    """A local HTTP server answering every request with ``handler``; it records requests."""

    handler: Handler | None = None
    seen: list[dict[str, str]] = field(default_factory=list)
    url: str = ""
    runner: web.AppRunner | None = None

    async def _any(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(dict(request.headers))
        await request.read()
        if self.handler is None:
            return web.json_response({"status": "DELIVERED"})
        return await self.handler(request)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def sites() -> AsyncIterator[tuple[Site, Site]]:
    provider, elsewhere = Site(), Site()
    await provider.start()
    await elsewhere.start()
    try:
        yield provider, elsewhere
    finally:
        await provider.stop()
        await elsewhere.stop()


def clients(base_url: str) -> list[tuple[StatusProvider, MessageType]]:
    return [
        (SimulatedProvider("gen", base_url, bearer_token="generic-key-123"), MessageType.SMS),
        (
            SolapiProvider(
                "solapi", api_key="solapi-key", api_secret="solapi-secret", base_url=base_url
            ),
            MessageType.ALIMTALK,
        ),
        (
            IwinvProvider(
                "iwinv", api_key="iwinv-alimtalk-key", base_url=base_url, clock=lambda: NOW
            ),
            MessageType.ALIMTALK,
        ),
        (
            IwinvProvider(
                "iwinv",
                sms_api_key="iwinv-sms-key",
                sms_auth_key="iwinv-sms-auth",
                sms_company_id="c1",
                sms_base_url=base_url,
                clock=lambda: NOW,
            ),
            MessageType.SMS,
        ),
    ]


def query(type: MessageType) -> StatusQuery:
    return StatusQuery(provider_message_id="12345", type=type, to="010-1234-5678", requested_at=NOW)


async def lookup_error(provider: StatusProvider, type: MessageType) -> ProviderError:
    try:
        with pytest.raises(ProviderError) as info:
            await provider.get_delivery_status(query(type))
    finally:
        await provider.close()
    return info.value


@pytest.mark.parametrize("code", [301, 302, 307, 308])
async def test_a_redirect_is_not_followed_with_our_keys(
    sites: tuple[Site, Site], code: int
) -> None:
    provider_site, elsewhere = sites

    async def redirect(request: web.Request) -> web.StreamResponse:
        return web.Response(status=code, headers={"Location": f"{elsewhere.url}/steal"})

    provider_site.handler = redirect
    for provider, type in clients(provider_site.url):
        error = await lookup_error(provider, type)
        assert error.http_status == code
        assert error.retryable
        assert "redirect" in error.message
    assert len(provider_site.seen) == 4
    assert elsewhere.seen == []  # no request, no AUTH/secret/Authorization header, elsewhere
