"""The public listener: providers' delivery reports in, nothing else.

``DELIVERYTRACK_WEBHOOK_HOST``/``_PORT`` (default ``127.0.0.1:6067``) serve exactly two routes:

- ``POST /webhooks/{providerId}``: the webhook ingress (``streams/webhooks/ingress.py``), which
  verifies each provider's own signature or token;
- ``GET /health``: ``{"status": "ok"}`` (200) or ``{"status": "unavailable"}`` (503), for a
  load balancer in front of it; no counters, URLs or errors.

Every other path is a JSON 404 (405 for another method), whatever token is sent: the query
API, ``/internal/query`` and the admin routes are only on the API listener (the Faust web
server, ``DELIVERYTRACK_WEB_HOST``/``_PORT``), which needs a token. A separate aiohttp
application and server, so no route of the API can leak onto this one. It starts once the fold
engine's producer is up and stops before it, so an accepted report always has a producer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web as aiohttp_web
from multidict import CIMultiDict

from deliverytrack.streams.http.errors import dumps_json, json_errors
from deliverytrack.streams.http.server import JsonErrorAppRunner
from deliverytrack.streams.metrics import UNKNOWN, Metrics
from deliverytrack.streams.webhooks.ingress import WebhookIngress

log = logging.getLogger(__name__)

MIN_BODY_BYTES = 1_048_576
"""The largest request body is the largest report the ingress accepts, and at least this."""


def _json(body: object, status: int = 200) -> aiohttp_web.Response:
    return aiohttp_web.Response(
        body=dumps_json(body), status=status, content_type="application/json"
    )


def webhook_application(
    ingress: WebhookIngress,
    healthy: Callable[[], bool],
    metrics: Metrics | None = None,
    body_timeout_s: float = 30.0,
) -> aiohttp_web.Application:
    """The public listener's routes (an aiohttp application; tests serve it directly). A body
    that takes longer than ``body_timeout_s`` to arrive is answered 408; one larger than
    ``max(ingress.max_report_bytes, 1 MiB)`` is 413 (aiohttp's own limit, 1 MiB, would refuse
    a report the ingress accepts once ``DELIVERYTRACK_MAX_INPUT_BYTES`` is raised)."""

    async def receive(request: aiohttp_web.Request) -> aiohttp_web.Response:
        """The ingress answers every outcome itself (401/400/413 refused, 404 unknown
        provider, 503 Kafka did not acknowledge in time, 200 accepted)."""
        provider_id = request.match_info["provider_id"]
        try:
            async with asyncio.timeout(body_timeout_s):
                body = await request.read()
        except TimeoutError:
            late = _json({"error": f"the body did not arrive within {body_timeout_s:g} s"}, 408)
            late.force_close()
            return late
        headers = CIMultiDict(request.headers)
        token = request.query.get("token")
        if token and "X-Webhook-Token" not in headers:
            # For provider consoles that take only a URL: /webhooks/<id>?token=<secret>.
            headers["X-Webhook-Token"] = token
        status, answer = await ingress.handle(provider_id, headers, body)
        if metrics is not None:  # a provider id from the URL is a label only if configured
            known = provider_id if provider_id in ingress.adapters else UNKNOWN
            metrics.webhook_request(known, status)
        return _json(answer, status)

    async def health(request: aiohttp_web.Request) -> aiohttp_web.Response:
        if healthy():
            return _json({"status": "ok"})
        return _json({"status": "unavailable"}, 503)

    app = aiohttp_web.Application(
        middlewares=[json_errors],
        client_max_size=max(ingress.max_report_bytes, MIN_BODY_BYTES),
    )
    app.router.add_post("/webhooks/{provider_id}", receive)
    app.router.add_get("/health", health, allow_head=True)
    return app


class WebhookListener:
    """Serves :func:`webhook_application` on its own host and port."""

    def __init__(
        self,
        ingress: WebhookIngress,
        healthy: Callable[[], bool],
        host: str,
        port: int,
        *,
        shutdown_timeout_s: float = 15.0,
        metrics: Metrics | None = None,
        max_connections: int | None = None,
        body_timeout_s: float = 30.0,
    ) -> None:
        self.app = webhook_application(ingress, healthy, metrics, body_timeout_s)
        self.max_connections = max_connections
        self.host = host
        self.port = port
        self.shutdown_timeout_s = shutdown_timeout_s
        self._runner: aiohttp_web.AppRunner | None = None

    async def start(self) -> None:
        # No access log: a provider may put its token in the URL (?token=...).
        # Requests aiohttp's parser refuses (a URL over 8,190 bytes, ...) are JSON too.
        runner = JsonErrorAppRunner(
            self.app,
            access_log=None,
            shutdown_timeout=self.shutdown_timeout_s,
            max_connections=self.max_connections,
        )
        await runner.setup()
        site = aiohttp_web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = [address for address in runner.addresses if address]
        log.info("webhook listener on %s (POST /webhooks/{providerId})", bound)

    @property
    def bound_port(self) -> int | None:
        """The port actually bound (``DELIVERYTRACK_WEBHOOK_PORT=0`` picks a free one)."""
        if self._runner is None or not self._runner.addresses:
            return None
        port: int = self._runner.addresses[0][1]
        return port

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
