"""Hostile HTTP requests against a running worker (real broker, real web server): every one is
answered below 500, with a JSON message for each 4xx; the worker stays healthy, only the
reports it accepted reach provider-webhooks, and it goes on folding good input afterwards.

The corpus is the unit tests' (tests/unit/streams/test_http_errors.py): the cases named in
issue 13, a body corpus per webhook adapter, hostile query parameters on every query route,
internal-query bodies, every route x method x content type, undecodable bytes on the wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from yarl import URL

from deliverytrack.models.settings import Settings
from tests.integration.conftest import WorkerProcess
from tests.integration.support import send
from tests.unit.streams.test_http_errors import (
    GEN_SECRET,
    HOSTILE_VALUES,
    ROUTE_PARAMS,
    ROUTES,
    TOKEN,
    _named_cases,
    _report,
    internal_bodies,
    signed,
    webhook_corpus,
    webhook_headers,
)

pytestmark = pytest.mark.integration

# Faust's own routes on the same listener.
FAUST_ROUTES = ["/", "/router/", "/router/topics", "/router/x/", "/router/x/y/", "/table/"]
FAUST_ROUTES += ["/table/x/", "/table/x/y/"]

Request = tuple[Any, str, "str | URL", bytes | None, dict[str, str], list[tuple[str, str]]]


def hostile_requests() -> Iterator[Request]:
    """(case, method, path, body, headers, params) of the whole corpus."""
    for name, method, path, body, headers, _, _ in _named_cases():
        yield name, method, path, body, headers or {}, []
    for provider_id in ("gen", "sol", "iw"):
        for name, body in webhook_corpus(provider_id):
            headers = webhook_headers(provider_id, body)
            yield (provider_id, name), "POST", f"/webhooks/{provider_id}", body, headers, []
    for route, names in ROUTE_PARAMS.items():
        for name in names:
            for value in HOSTILE_VALUES:
                params = [(name, value)]
                if route == "/records/count-by" and name != "groupBy":
                    params.append(("groupBy", "status"))
                yield (route, name, value), "GET", route, None, {}, params
    for message_id in ("nope", "x" * 5_000, "%00", "%FF", "%ED%A0%80", "a%2Fb", "%C3%28"):
        for suffix in ("", "/history"):
            yield (
                ("record", message_id[:20], suffix),
                "GET",
                URL(f"/records/{message_id}{suffix}"),
                None,
                {},
                [],
            )
    for route in ROUTE_PARAMS:
        for raw in ("now=%FF", "now=%ED%A0%80", "%FF=1", "limit=%C3%28", "=&&="):
            yield (route, raw), "GET", URL(f"{route}?{raw}"), None, {}, []
    for body in internal_bodies():
        yield ("internal", body[:60]), "POST", "/internal/query", body, {}, []
    contents: list[tuple[bytes | None, dict[str, str]]] = [
        (None, {}),
        (b"{}", {"Content-Type": "application/json"}),
        (b"a=1&b=2", {"Content-Type": "application/x-www-form-urlencoded"}),
        (b"\x00\xff" * 100, {"Content-Type": "application/octet-stream"}),
    ]
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"):
        for route in (*ROUTES, *FAUST_ROUTES):
            for body, headers in contents:
                yield (method, route, body), method, route, body, headers, []


async def call(
    session: aiohttp.ClientSession,
    worker: WorkerProcess,
    method: str,
    path: str | URL,
    body: bytes | None,
    headers: dict[str, str],
    params: list[tuple[str, str]],
) -> tuple[int, str, bytes]:
    """One request, to the listener that serves ``path``: the webhook listener for
    ``/webhooks/...``, the API listener (with the worker's token) for the rest."""
    url: str | URL
    if str(path).startswith("/webhooks/"):
        base_url = worker.webhook_url
    else:
        base_url, headers = worker.base_url, {**headers, **worker.headers()}
    if isinstance(path, URL):
        url = URL(f"{base_url}{path}", encoded=True)
    else:
        url = f"{base_url}{path}"
    async with session.request(method, url, data=body, headers=headers, params=params) as r:
        return r.status, r.content_type, await r.read()


async def raw_status(port: int, request: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    return int(head.split(b" ", 2)[1])


async def test_hostile_requests_to_a_running_worker_are_refused_and_it_keeps_working(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any
) -> None:
    settings: Settings = settings_factory(
        providers={
            "gen": {"kind": "none", "webhookSecret": GEN_SECRET},
            "sol": {"kind": "solapi", "apiKey": "k", "apiSecret": "s", "webhookSecret": TOKEN},
            "iw": {"kind": "iwinv", "apiKey": "k", "webhookSecret": TOKEN},
        },
        polling={"initialDelayMs": 3_600_000, "intervalMs": 3_600_000},
    )
    worker = await worker_factory(settings).astart()
    io = await kafka_io_factory(settings)
    for i in range(8):
        await io.send(io.topics.send_results, f"h-{i}", send(f"h-{i}", f"pm-h-{i}", "gen"))
    await worker.arecord("h-7")

    accepted: set[str] = set()
    answered: dict[int, int] = {}
    async with aiohttp.ClientSession() as session:
        for case, method, path, body, headers, params in hostile_requests():
            status, content_type, raw = await call(
                session, worker, method, path, body, headers, params
            )
            answered[status] = answered.get(status, 0) + 1
            assert status < 500, (case, status, raw[:300])
            if method == "HEAD" or status in (400, 414, 431) and content_type == "text/plain":
                continue  # no body / refused by aiohttp's HTTP parser before any route
            assert content_type == "application/json", (case, status, content_type, raw[:200])
            answer = orjson.loads(raw)
            if status >= 400:
                assert isinstance(answer["error"], str) and answer["error"], (case, answer)
            elif str(path).startswith("/webhooks/"):
                accepted.update(answer["eventIds"])
        for start, extra in (
            (b"POST /webhooks/sol", b"X-Webhook-Token: \xff\xfe\r\n"),
            (b"POST /webhooks/gen", b"X-DeliveryTrack-Signature: \xff\r\n"),
            (b"POST /webhooks/sol", b"Content-Encoding: gzip\r\n"),
            (b"GET /records/\xff", b""),
        ):
            body = orjson.dumps(_report("sol"))
            webhook = start.split(b" ")[1].startswith(b"/webhooks/")
            auth = b"" if webhook else f"Authorization: Bearer {worker.token}\r\n".encode()
            request = (
                start
                + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                + auth
                + extra
                + b"X-DeliveryTrack-Timestamp: 1\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            port = settings.webhook_port if webhook else settings.web_port
            status = await raw_status(port, request)
            assert 400 <= status < 500, (start, extra, status)

        # Still healthy, and a good report after all that is accepted and folded.
        status, health = await worker.aget("/health")
        assert status == 200 and health["status"] == "ok", health
        good = orjson.dumps(_report("gen", providerMessageId="pm-h-3"))
        status, _, raw = await call(
            session, worker, "POST", "/webhooks/gen", good, signed(good), []
        )
        assert status == 200, raw
        accepted.update(orjson.loads(raw)["eventIds"])
    record = await worker.arecord("h-3", lambda r: r["status"] == "DELIVERED", 30)
    assert record["messageId"] == "h-3"

    # Only what was accepted (200) was published: no refused request left a report behind.
    published = await io.read(
        io.topics.provider_webhooks,
        lambda ms: {orjson.loads(m.value)["eventId"] for m in ms} >= accepted,
        timeout=30,
    )
    assert {orjson.loads(m.value)["eventId"] for m in published} == accepted
    assert answered.get(200, 0) >= len(accepted) > 0
    _, health = await worker.aget("/health")
    assert health["deadLetters"] == 0
    assert worker.stop() == 0
