"""The requests aiohttp refuses before any route or middleware runs, answered in JSON.

aiohttp's HTTP parser refuses a request line or header over 8,190 bytes, a malformed request
line, conflicting framing headers, ... itself, in ``RequestHandler.handle_error``: a plain-text
400 and an ERROR with a traceback in the log, for what is the client's mistake. No middleware
sees those requests (there is no request yet), and aiohttp offers no setting for the answer's
format, so both listeners run their application through :class:`JsonErrorAppRunner`, whose
request handler answers them like every other error: ``{"error": ...}``, 414 for a request
target over the limit, 431 for a header, 400 otherwise, and logs one INFO line without the
traceback. Errors of the server (5xx) keep aiohttp's own handling.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from deliverytrack.streams.http.errors import dumps_json

log = logging.getLogger(__name__)

_REQUEST_TARGET = re.compile(rb"^(?:/|\*|https?://|[A-Z]+ )")
"""The start of what LineTooLong quotes when it is the request line (or its target)."""
_QUOTE = re.compile(r"\n\n| b?'| b?\"")
"""Where the parser's message starts quoting the request (llhttp: a blank line, then the line
as bytes; the pure-Python parser: ``'...'`` after the reason). The quoted line may hold a token
(``Authorization``, ``X-Webhook-Token``, a URL's ``?token=``): it is left out."""


def describe_bad_http(exc: HttpProcessingError) -> tuple[int, str]:
    """(status, message) for a request the HTTP parser refused."""
    if isinstance(exc, LineTooLong):
        quoted, limit = exc.args[0], exc.args[1]
        if isinstance(quoted, bytes | bytearray) and _REQUEST_TARGET.match(bytes(quoted)):
            return 414, (
                f"the URL is longer than {limit} bytes: send fewer or shorter query "
                "parameters (page with after= instead of long lists)"
            )
        return 431, f"a request header is longer than {limit} bytes"
    reason = " ".join(_QUOTE.split(exc.message or "", maxsplit=1)[0].split()).rstrip(":")
    return 400, f"malformed HTTP request: {(reason or type(exc).__name__)[:200]}"


class JsonErrorRequestHandler(RequestHandler):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(self._manager, _JsonErrorServer) and self._manager.full():
            transport.close()  # before the handler starts: nothing to serve, nothing to clean
            return
        super().connection_made(transport)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        status, text = describe_bad_http(exc)
        log.info("refused a malformed request from %s: %s", request.remote, text)
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send an error response")
        response = web.Response(
            status=status, body=dumps_json({"error": text}), content_type="application/json"
        )
        response.force_close()
        return response


class _JsonErrorServer(Server):
    max_connections: int | None = None
    refused_at = -math.inf

    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)

    def full(self) -> bool:
        """``max_connections`` are open: a new one is closed at once (warned once a minute),
        so slow clients, each holding a connection and up to a body's memory, cannot pile up."""
        open_now = len(self._connections)  # not .connections: a list copy per connection
        if self.max_connections is None or open_now < self.max_connections:
            return False
        now = time.monotonic()
        if now - self.refused_at > 60:
            self.refused_at = now
            log.warning(
                "%d connections open: closing new ones (DELIVERYTRACK_HTTP_MAX_CONNECTIONS)",
                open_now,
            )
        return True


class JsonErrorAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are served by :class:`JsonErrorRequestHandler`,
    at most ``max_connections`` at a time (None: no limit)."""

    def __init__(
        self, app: web.Application, *, max_connections: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self.max_connections = max_connections

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer  # the same server; only its handler class differs
        server.max_connections = self.max_connections  # type: ignore[attr-defined]
        return server
