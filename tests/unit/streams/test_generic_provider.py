"""The generic status-API contract: any provider that answers like this needs no code."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from deliverytrack.models.enums import MessageType, TrackingStatus
from deliverytrack.models.settings import ProviderConfig
from deliverytrack.streams.providers.base import StatusQuery
from deliverytrack.streams.providers.registry import build_provider


async def test_generic_kind_follows_the_contract_with_a_bearer_token() -> None:
    seen: list[str] = []

    async def status(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.match_info["pmid"] == "later":
            return web.json_response({"error": "not found yet"}, status=404)
        return web.json_response(
            {"status": "DELIVERED", "statusCode": "OK", "deliveredAt": "2026-11-24T01:02:03Z"}
        )

    app = web.Application()
    app.router.add_get("/v1/messages/{pmid}/status", status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    config = ProviderConfig.model_validate(
        {"kind": "generic", "baseUrl": f"http://127.0.0.1:{port}", "apiKey": "tok-1"}
    )
    provider = build_provider("acme", config, default_timeout_s=5)
    query = StatusQuery("pm-9", MessageType.SMS, "01000000000", datetime.now(UTC))
    try:
        result = await provider.get_delivery_status(query)
        assert result is not None and result.status == TrackingStatus.DELIVERED
        assert result.status_code == "OK"
        later = StatusQuery("later", MessageType.SMS, "01000000000", datetime.now(UTC))
        assert await provider.get_delivery_status(later) is None
        assert seen == ["Bearer tok-1", "Bearer tok-1"]
    finally:
        await provider.close()
        await runner.cleanup()
