"""Hostile provider answers, for every status client (generic, SOLAPI, IWINV AlimTalk and SMS):
a redirect is not followed (it would send our keys and a request elsewhere), and a huge or
compressed answer is not read whole into memory."""

from __future__ import annotations

import asyncio
import gzip
import socket
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from deliverytrack.models.enums import MessageType
from deliverytrack.models.events import PollRequested
from deliverytrack.streams.polling.poller import Poller
from deliverytrack.streams.providers.base import (
    MAX_ANSWER_BYTES,
    MAX_ERROR_MESSAGE_CHARS,
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


async def test_a_compressed_bomb_is_not_inflated_whole(sites: tuple[Site, Site]) -> None:
    provider_site, _ = sites
    bomb = gzip.compress(b" " * (64 * 1024 * 1024), compresslevel=9)

    async def inflate(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=bomb,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    provider_site.handler = inflate
    for provider, type in clients(provider_site.url):
        tracemalloc.start()
        try:
            error = await lookup_error(provider, type)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 16 * 1024 * 1024
        assert error.retryable
        assert f"larger than {MAX_ANSWER_BYTES:,} bytes" in error.message


@pytest.mark.parametrize("status", [200, 503])
async def test_a_huge_answer_is_cut_off(sites: tuple[Site, Site], status: int) -> None:
    provider_site, _ = sites
    huge: dict[str, Any] = {"error": "x" * (4 * MAX_ANSWER_BYTES), "errorMessage": "y"}

    async def answer(request: web.Request) -> web.StreamResponse:
        return web.json_response(huge, status=status)

    provider_site.handler = answer
    for provider, type in clients(provider_site.url):
        error = await lookup_error(provider, type)
        assert error.retryable  # 503 by its status, 200 as a PROVIDER_ERROR
        assert error.http_status == status
        assert len(error.message) < 1_000
        assert ("larger than" in error.message) == (status == 200)


async def test_a_huge_not_found_is_still_no_result_yet(sites: tuple[Site, Site]) -> None:
    provider_site, _ = sites

    async def answer(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": "x" * (4 * MAX_ANSWER_BYTES)}, status=404)

    provider_site.handler = answer
    provider = SimulatedProvider("gen", provider_site.url)
    try:
        assert await provider.get_delivery_status(query(MessageType.SMS)) is None
    finally:
        await provider.close()


async def test_an_answer_within_the_limit_is_read_as_before(sites: tuple[Site, Site]) -> None:
    provider_site, _ = sites

    async def latin1(request: web.Request) -> web.StreamResponse:
        body = '{"error": "caf\u00e9"}'.encode("latin-1")
        return web.Response(
            body=body, status=400, content_type="application/json", charset="latin-1"
        )

    provider_site.handler = latin1
    provider, type = clients(provider_site.url)[0]
    error = await lookup_error(provider, type)
    assert error.message == "caf\u00e9"
    assert error.http_status == 400


async def test_a_long_error_message_is_cut_in_the_observation(sites: tuple[Site, Site]) -> None:
    provider_site, _ = sites

    async def answer(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": "x" * 100_000}, status=400)

    provider_site.handler = answer
    provider = SimulatedProvider("gen", provider_site.url)
    poller = Poller({"gen": provider}, timeout_s=5.0, clock=lambda: NOW)
    request = PollRequested(
        event_id="m1:poll:1",
        message_id="m1",
        check_seq=1,
        provider_id="gen",
        provider_message_id="12345",
        type=MessageType.SMS,
        to="01012345678",
        requested_at=NOW,
        due_at=NOW,
        issued_at=NOW,
    )
    try:
        observed = await poller.poll(request)
    finally:
        await provider.close()
    assert observed.error is not None
    assert observed.error.code == "INVALID_REQUEST"
    assert len(observed.error.message) == MAX_ERROR_MESSAGE_CHARS
    assert observed.error.message.endswith("xx...")


async def test_a_password_in_the_base_url_is_not_quoted_in_errors(
    sites: tuple[Site, Site],
) -> None:
    provider_site, _ = sites

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(1)
        return web.json_response({})

    provider_site.handler = slow
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]  # nothing listens once it is closed
    slow_url = provider_site.url.replace("http://", "http://gw:pw-0123456789@")
    for base_url in (f"http://gw:pw-0123456789@127.0.0.1:{closed_port}", slow_url):
        # Those that send no Authorization header (aiohttp refuses both with credentials).
        for provider, type in [(SimulatedProvider("gen", base_url), MessageType.SMS)] + clients(
            base_url
        )[2:]:
            provider.timeout_s = 0.2  # type: ignore[attr-defined]
            error = await lookup_error(provider, type)
            assert error.code in ("NETWORK_ERROR", "NETWORK_TIMEOUT")
            assert "pw-0123456789" not in str(error)
            assert "127.0.0.1" in error.message
