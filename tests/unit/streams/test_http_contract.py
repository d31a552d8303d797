"""One contract, one format (issue 15), on the worker's real views:

- every time the API writes is ISO-8601 UTC with ``Z`` (``/stats`` period, ``/records/due``'s
  now), as the records are;
- a refused parameter is named as the caller wrote it, in plain words (no snake_case field, no
  pydantic "Value error, " prefix, "not an integer" only for what is not one);
- a range whose start is after its end is the same 400 on every route;
- a request aiohttp's parser refuses (a URL over 8,190 bytes, a header over it) is JSON 414/431
  on both listeners, logged as one INFO line, no traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from deliverytrack.models.policy import FoldPolicy
from deliverytrack.models.settings import Settings
from deliverytrack.streams.cli.tail import format_change
from deliverytrack.streams.http.server import JsonErrorAppRunner
from deliverytrack.streams.state.store import PartitionStore
from deliverytrack.streams.worker.app import DeliveryTrackApp, create_app
from deliverytrack.tables.fold import fold
from tests.factories import T0, send_recorded_factory


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[DeliveryTrackApp, TestClient[Any, Any]]]:
    app = create_app(Settings(data_dir=tmp_path / "data", partitions=1))
    app.engine.partitions.attach(0, PartitionStore(tmp_path / "p0.db"), ready=True)
    app.engine.ready.set()
    async with TestClient(TestServer(app.web.web_app)) as client:  # type: ignore[attr-defined]
        yield app, client
    app.engine.store(0).close()


async def _get(client: TestClient[Any, Any], path: str) -> tuple[int, Any]:
    async with client.get(path) as response:
        return response.status, orjson.loads(await response.read())


async def test_times_are_written_with_z(
    served: tuple[DeliveryTrackApp, TestClient[Any, Any]],
) -> None:
    _, client = served
    status, body = await _get(
        client, "/stats?from=2026-12-01T09:00:00%2B09:00&to=2026-12-02T08:59:59.5%2B09:00"
    )
    assert status == 200, body
    assert body["period"] == {"from": "2026-12-01T00:00:00Z", "to": "2026-12-01T23:59:59.500000Z"}
    status, body = await _get(client, "/records/due?now=2026-12-01T09:00:00%2B09:00")
    assert (status, body["now"]) == (200, "2026-12-01T00:00:00Z")
    status, body = await _get(client, "/records/due?now=1796461200000")
    assert body["now"] == "2026-12-05T09:00:00Z"


def test_tail_lines_are_written_with_z() -> None:
    record, emitted = fold(None, send_recorded_factory("m-1", requested_at=T0))
    assert record is not None
    change = emitted[0]
    line = format_change(change)  # type: ignore[arg-type]
    assert line.startswith(record.status_updated_at.isoformat().replace("+00:00", "Z") + "  m-1")
    assert "+00:00" not in line and "+00:00" not in format_change(change, as_json=True)  # type: ignore[arg-type]
    assert "record" not in orjson.loads(format_change(change, as_json=True))  # type: ignore[arg-type]
    assert "changes" not in orjson.loads(format_change(change, as_json=True))  # type: ignore[arg-type]


def test_tail_json_keeps_a_slim_change_s_changes() -> None:
    policy = FoldPolicy(status_change_record="changes")
    _, (change, *_) = fold(None, send_recorded_factory("m-1", requested_at=T0), policy)
    line = orjson.loads(format_change(change, as_json=True))  # type: ignore[arg-type]
    assert "record" not in line and line["changes"]["status"] == "SENT"
    assert line["changes"]["requestedAt"] == "2026-11-23T09:00:00Z"


BAD_PARAMETERS = [
    # (query, the parameter named first, words the message must have)
    ("/records?requestedAtFrom=-1", "requestedAtFrom", "before 1970"),
    ("/records?requestedAtTo=yesterday", "requestedAtTo", "is not a time"),
    ("/records?statusUpdatedAtFrom=2026-12-01T00:00:00", "statusUpdatedAtFrom", "no timezone"),
    ("/records?limit=ten", "limit", "'ten' is not an integer"),
    ("/records?limit=99999999999999999999999", "limit", "between 0 and 10000"),
    ("/records?offset=99999999999999999999999", "offset", "between 0 and 10000"),
    ("/records?offset=-1", "offset", "between 0 and 10000"),
    ("/records?orderBy=createdAt", "orderBy", "requestedAt or statusUpdatedAt"),
    ("/records?status=DONE", "status", "unknown value 'DONE'"),
    ("/records?type=TELEGRAM", "type", "unknown value 'TELEGRAM'"),
    ("/records?after=yesterday", "after", "nextAfter"),
    ("/records/count?requestedAtFrom=0001-01-01T00:00:00%2B14:00", "requestedAtFrom", "not a time"),
    ("/records/count-by?groupBy=country", "groupBy", "subset of providerId,type,status"),
    ("/records/due?now=-1", "now", "before 1970"),
    ("/stats?from=tomorrow", "from", "is not a time"),
    ("/stats/summary?from=2026-12-01T00:00:00Z", "to", "required"),
]


@pytest.mark.parametrize(("path", "name", "words"), BAD_PARAMETERS)
async def test_a_refused_parameter_is_named_as_written_in_plain_words(
    served: tuple[DeliveryTrackApp, TestClient[Any, Any]], path: str, name: str, words: str
) -> None:
    _, client = served
    status, body = await _get(client, path)
    assert status == 400, body
    message = body["error"]
    assert message.startswith(f"{name}: "), message
    assert words in message, message
    for leak in ("Value error", "validation error", "_at_", "input_value"):
        assert leak not in message, message
    if "9999" in path:  # a number, only too large: not "is not an integer"
        assert "not an integer" not in message, message


REVERSED = "2026-12-02T00:00:00Z", "2026-12-01T00:00:00Z"


@pytest.mark.parametrize(
    ("path", "low", "high"),
    [
        ("/records?requestedAtFrom={0}&requestedAtTo={1}", "requestedAtFrom", "requestedAtTo"),
        (
            "/records/count?requestedAtFrom={0}&requestedAtTo={1}",
            "requestedAtFrom",
            "requestedAtTo",
        ),
        (
            "/records/count-by?groupBy=status&statusUpdatedAtFrom={0}&statusUpdatedAtTo={1}",
            "statusUpdatedAtFrom",
            "statusUpdatedAtTo",
        ),
        ("/stats?from={0}&to={1}", "from", "to"),
        ("/stats/summary?from={0}&to={1}", "from", "to"),
    ],
)
async def test_a_reversed_range_is_the_same_400_everywhere(
    served: tuple[DeliveryTrackApp, TestClient[Any, Any]], path: str, low: str, high: str
) -> None:
    _, client = served
    status, body = await _get(client, path.format(*(quote(t) for t in REVERSED)))
    assert status == 400, body
    assert body["error"] == (
        f"{low}: must not be after {high} (2026-12-02T00:00:00Z > 2026-12-01T00:00:00Z); no "
        "record could match: swap them"
    )


async def test_the_same_millisecond_is_not_a_reversed_range(
    served: tuple[DeliveryTrackApp, TestClient[Any, Any]],
) -> None:
    _, client = served
    bounds = quote("2026-12-01T00:00:00.0009Z"), quote("2026-12-01T00:00:00.0001Z")
    status, _ = await _get(
        client, "/records/count?requestedAtFrom={}&requestedAtTo={}".format(*bounds)
    )
    assert status == 200


async def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


async def _serve(application: web.Application) -> tuple[JsonErrorAppRunner, int]:
    runner = JsonErrorAppRunner(application, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


@pytest.mark.parametrize("listener", ["api", "webhooks"])
async def test_what_the_http_parser_refuses_is_json_and_no_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, listener: str
) -> None:
    app = create_app(Settings(data_dir=tmp_path / "data", partitions=1))
    # The API's runner is the one the Faust worker sets up; the webhook listener's is its own.
    assert isinstance(app.web._runner, JsonErrorAppRunner)  # type: ignore[attr-defined]
    application = app.web.web_app if listener == "api" else app.webhook_listener.app  # type: ignore[attr-defined]
    runner, port = await _serve(application)
    caplog.set_level(logging.INFO)
    try:
        long_url = b"GET /records?messageId=" + b"m" * 9_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        status, headers, body = await _raw(port, long_url)
        assert status == 414
        assert headers["Content-Type"].startswith("application/json")
        assert "URL is longer than 8190 bytes" in orjson.loads(body)["error"]
        big_header = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9_000 + b"\r\n\r\n"
        status, _, body = await _raw(port, big_header)
        assert status == 431 and "header is longer than 8190 bytes" in orjson.loads(body)["error"]
        status, _, body = await _raw(port, b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        assert status == 400 and orjson.loads(body)["error"].startswith("malformed HTTP request")
    finally:
        await runner.cleanup()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "Traceback" not in caplog.text
    refused = [r for r in caplog.records if "refused a malformed request" in r.getMessage()]
    assert len(refused) == 3 and all(r.exc_info is None for r in refused)


SECRET = "s3cret-token-0123456789"


@pytest.mark.parametrize(
    ("listener", "request_bytes"),
    [
        # A token file saved with a Windows line end: the bearer header ends in a stray CR.
        ("api", f"GET /records HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\r\r\n\r\n"),
        ("api", f"GET /records HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\x00\r\n\r\n"),
        (
            "webhooks",
            f"POST /webhooks/sol HTTP/1.1\r\nHost: x\r\nX-Webhook-Token: {SECRET}\x01\r\n\r\n",
        ),
        # A provider console's URL (?token=) with a character the parser refuses.
        ("webhooks", f"POST /webhooks/sol?token={SECRET}\x7f HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("webhooks", f"POST /webhooks/sol?token={SECRET} x HTTP/1.1\r\nHost: x\r\n\r\n"),
    ],
)
async def test_a_refused_request_line_or_header_is_not_quoted_back_or_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, listener: str, request_bytes: str
) -> None:
    """aiohttp's parser quotes the line it refused; that line may carry a token (a bearer
    header, a webhook token, a URL's ?token=), which must reach neither the log nor the
    answer."""
    app = create_app(Settings(data_dir=tmp_path / "data", partitions=1))
    application = app.web.web_app if listener == "api" else app.webhook_listener.app  # type: ignore[attr-defined]
    runner, port = await _serve(application)
    caplog.set_level(logging.DEBUG)
    try:
        status, _, body = await _raw(port, request_bytes.encode("latin-1"))
    finally:
        await runner.cleanup()
    message = orjson.loads(body)["error"]
    assert status == 400 and message.startswith("malformed HTTP request: "), message
    assert len(message) > len("malformed HTTP request: ")
    assert SECRET not in message
    assert SECRET not in caplog.text


def test_the_pure_python_parsers_quotes_are_left_out_too() -> None:
    """aiohttp without its C extension quotes the line in another form (``'...'``)."""
    from aiohttp.http_exceptions import BadStatusLine, InvalidHeader

    from deliverytrack.streams.http.server import describe_bad_http

    for exc, words in (
        (BadStatusLine(f"POST /webhooks/sol?token={SECRET} x HTTP/1.1"), "Bad status line"),
        (InvalidHeader(f"Authorization: Bearer {SECRET}\x00".encode()), "Invalid HTTP header"),
    ):
        status, message = describe_bad_http(exc)
        assert status == 400 and SECRET not in message, message
        assert message == f"malformed HTTP request: {words}", message


@pytest.mark.parametrize(
    ("listener", "path"), [("api", "/internal/query"), ("webhooks", "/webhooks/sol")]
)
async def test_a_client_that_hangs_up_mid_body_is_not_logged_as_a_server_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, listener: str, path: str
) -> None:
    """Anyone can announce a body and close the connection before sending it: that is the
    client going away, not a bug of the worker (no ERROR, no traceback)."""
    app = create_app(Settings(data_dir=tmp_path / "data", partitions=1))
    application = app.web.web_app if listener == "api" else app.webhook_listener.app  # type: ignore[attr-defined]
    runner, port = await _serve(application)
    caplog.set_level(logging.INFO)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{{".encode())
        await writer.drain()
        await asyncio.sleep(0.2)  # the handler is reading the body
        writer.close()
        await writer.wait_closed()
        for _ in range(50):
            await asyncio.sleep(0.02)
            if caplog.records:
                break
    finally:
        await runner.cleanup()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "Traceback" not in caplog.text


async def test_connections_beyond_the_cap_are_closed_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Slow clients each hold a connection: past DELIVERYTRACK_HTTP_MAX_CONNECTIONS a new one
    is closed at once (one warning), and a place that frees up serves again."""
    settings = Settings(data_dir=tmp_path / "data", partitions=1, http_max_connections=2)
    app = create_app(settings)
    assert app.webhook_listener.max_connections == 2  # type: ignore[attr-defined]
    runner = JsonErrorAppRunner(app.webhook_listener.app, access_log=None, max_connections=2)  # type: ignore[attr-defined]
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    caplog.set_level(logging.INFO)
    try:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for _, writer in held:  # headers never finished: slowloris
            writer.write(b"POST /webhooks/sol HTTP/1.1\r\nHost: x\r\n")
            await writer.drain()
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing answered
        writer.close()
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.2)
        status, _, _ = await _raw(port, b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n")
        assert status in (200, 503)
    finally:
        await runner.cleanup()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["2 connections open: closing new ones (DELIVERYTRACK_HTTP_MAX_CONNECTIONS)"]


async def test_a_webhook_body_slower_than_its_deadline_is_answered_408(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", partitions=1, webhook_body_timeout_ms=300)
    app = create_app(settings)
    runner, port = await _serve(app.webhook_listener.app)  # type: ignore[attr-defined]
    try:
        started = asyncio.get_running_loop().time()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /webhooks/sol HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        waited = asyncio.get_running_loop().time() - started
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if line)
        body = await reader.readexactly(int(headers["Content-Length"]))
        writer.close()
    finally:
        await runner.cleanup()
    assert lines[0].split()[1] == "408" and headers["Connection"] == "close"
    assert orjson.loads(body) == {"error": "the body did not arrive within 0.3 s"}
    assert 0.25 < waited < 5
