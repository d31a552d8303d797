"""HTTP errors of both listeners (the API and the webhook ingress) as JSON ``{"error":
"<what is wrong>"}``, through one mechanism, the :func:`json_errors` middleware:

- whatever parses or validates request input runs inside :func:`request_input`, which turns
  any error it raises (pydantic ``ValidationError``, ``DecodeError``, ``ValueError``,
  ``OverflowError``, ``RecursionError``, a Unicode error, ...) into :class:`BadRequest`, a 4xx
  with the reason; aiohttp's own 4xx (404 no such route, 405, 413 for a body over its size
  limit, ...) become JSON too;
- a table that is not fully served (rebalancing) is 503, and so is a long query that found
  every scan slot taken; a query over its budget (``streams/query/limits.py``) is 422;
- a client that closes its connection before its body arrived is logged as one INFO line;
- anything else raised while *answering* a valid request is a server bug: logged with its
  traceback and answered 500 ``{"error": "internal error ..."}``, never disguised as a 4xx.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import faust
import orjson
from aiohttp import web as aiohttp_web
from aiohttp.http_exceptions import BadHttpMessage
from pydantic import ValidationError

from deliverytrack.streams.query.limits import QueryLimitExceeded, ScanBusy
from deliverytrack.streams.query.service import Unavailable
from deliverytrack.tables.query import plain

log = logging.getLogger(__name__)


INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, OverflowError, RecursionError)
"""What parsing hostile input may raise. ``ValueError`` covers pydantic's ``ValidationError``,
our ``DecodeError`` and ``QueryError``, orjson's ``JSONDecodeError`` and Unicode errors.
Deliberately not ``TypeError``/``KeyError``/``AttributeError``: parsers check shapes
themselves, so those are bugs and stay 500."""

MAX_ERROR_CHARS = 1_000


class BadRequest(Exception):  # noqa: N818 - an HTTP answer, not an error of the server
    """A request refused for its input: ``status`` (4xx) and a message for the caller."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def describe_input_error(exc: BaseException) -> str:
    """A short, caller-facing reason for an error raised while parsing request input."""
    if isinstance(exc, ValidationError):
        text = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {plain(err['msg'])}"
            for err in exc.errors(include_url=False)[:5]
        )
    elif isinstance(exc, RecursionError):
        text = "nested too deeply"
    elif isinstance(exc, OverflowError):
        text = f"a value is out of range ({exc})"
    elif isinstance(exc, UnicodeError):
        text = f"not valid UTF-8/Unicode ({exc.__class__.__name__})"
    else:
        text = str(exc) or exc.__class__.__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


@contextmanager
def request_input(what: str = "") -> Iterator[None]:
    """Parse or validate request input inside this block: an input error becomes a 400 with
    the reason (prefixed by ``what``). Only parsing goes here, never the work of answering."""
    try:
        yield
    except BadRequest:
        raise
    except INPUT_ERRORS as exc:
        reason = describe_input_error(exc)
        raise BadRequest(f"{what}: {reason}" if what else reason) from exc


def dumps_json(body: Any) -> bytes:
    """JSON bytes of an answer (orjson; an error text that is not valid Unicode, escaped)."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        # A str that is not valid Unicode (lone surrogates: a header's undecodable bytes, as
        # aiohttp decodes them) in an error message: written escaped.
        return json.dumps(body, ensure_ascii=True).encode()


def _error_response(status: int, message: str, headers: Any = None) -> aiohttp_web.Response:
    return aiohttp_web.Response(
        body=dumps_json({"error": message}),
        status=status,
        content_type="application/json",
        headers=headers,
    )


_AiohttpHandler = Callable[[aiohttp_web.Request], Awaitable[aiohttp_web.StreamResponse]]


@aiohttp_web.middleware
async def json_errors(
    request: aiohttp_web.Request, handler: _AiohttpHandler
) -> aiohttp_web.StreamResponse:
    """Every error of every route as a JSON answer (see the module docstring)."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return _error_response(exc.status, exc.message)
    except (Unavailable, ScanBusy) as exc:
        return _error_response(503, str(exc))
    except QueryLimitExceeded as exc:
        return _error_response(422, str(exc))
    except (aiohttp_web.RequestPayloadError, BadHttpMessage) as exc:
        # The body could not be read as sent (e.g. a corrupt gzip Content-Encoding).
        return _error_response(400, f"the request body cannot be read: {exc}")
    except aiohttp_web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's own answer (no such route, method not allowed, body too large, ...), as
        # JSON; headers such as Allow are kept.
        headers = {
            name: value
            for name, value in exc.headers.items()
            if name.lower() not in ("content-type", "content-length")
        }
        return _error_response(exc.status, exc.text or exc.reason, headers)
    except Exception as exc:
        if isinstance(exc, ConnectionResetError) and request.transport is None:
            # The client hung up before its body arrived: no one to answer, nothing broken.
            log.info("%s %s: the client closed the connection", request.method, request.path)
            return _error_response(400, "the connection closed before the request was read")
        log.exception("%s %s failed", request.method, request.path)
        return _error_response(500, "internal error (logged by the worker)")


def install_json_errors(app: faust.App) -> None:
    """Put :func:`json_errors` on the app's web server (once)."""
    middlewares: Any = app.web.web_app.middlewares  # type: ignore[attr-defined]
    if json_errors not in middlewares:
        middlewares.append(json_errors)
