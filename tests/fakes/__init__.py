"""Fake provider APIs: real aiohttp servers on loopback (port 0) that answer like the real ones.

Each fake checks the real authentication scheme, rate-limits after ``rate_limit_after``
requests (HTTP 429), fails on demand (``fail_next``: a 5xx or any status, with or without a
body, or a malformed 200), and lets a test set a message's status. ``requests`` records what
each call sent (method, path, query, headers, JSON body), so tests can assert the wire format.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass(slots=True)
class CannedAnswer:
    """One forced answer: ``body`` None means no body; a str is sent as-is (maybe not JSON)."""

    status: int
    body: Any = None
    content_type: str = "application/json"


class FakeServerBase:
    """Lifecycle, request log, rate limiting and forced failures shared by the fakes.

    ``rate_limit_after=N``: requests after the N-th get the provider's 429 answer.
    """

    def __init__(self, *, rate_limit_after: int | None = None) -> None:
        self.rate_limit_after = rate_limit_after
        self.requests: list[RecordedRequest] = []
        self._canned: list[CannedAnswer] = []
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = None

    # --- test controls ----------------------------------------------------------------------

    def fail_next(self, status: int, body: Any = None, *, times: int = 1) -> None:
        """The next ``times`` requests get ``status`` with ``body`` (None: empty body)."""
        self._canned.extend(CannedAnswer(status, body) for _ in range(times))

    def respond_raw_next(self, status: int, text: str, content_type: str = "text/html") -> None:
        self._canned.append(CannedAnswer(status, text, content_type))

    # --- shared request handling ------------------------------------------------------------

    def rate_limited_answer(self) -> web.Response:  # overridden per provider
        return web.json_response({"error": "too many requests"}, status=429)

    async def _record(self, request: web.Request) -> RecordedRequest:
        text = await request.text()
        try:
            body: Any = json.loads(text) if text else None
        except ValueError:
            body = text
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            body=body,
        )
        self.requests.append(recorded)
        return recorded

    def _pre_answer(self) -> web.Response | None:
        if self._canned:
            canned = self._canned.pop(0)
            if canned.body is None:
                return web.Response(status=canned.status)
            if isinstance(canned.body, str):
                return web.Response(
                    status=canned.status, text=canned.body, content_type=canned.content_type
                )
            return web.json_response(canned.body, status=canned.status)
        if self.rate_limit_after is not None and len(self.requests) > self.rate_limit_after:
            return self.rate_limited_answer()
        return None

    def wrap(
        self, handler: Callable[[web.Request, RecordedRequest], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            recorded = await self._record(request)
            early = self._pre_answer()
            if early is not None:
                return early
            return await handler(request, recorded)

        return handle

    def build_app(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> str:
        runner = web.AppRunner(self.build_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        port = runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
