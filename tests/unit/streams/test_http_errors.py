"""Hostile requests to every route of the worker's web server: each one is answered 4xx with a
JSON message, never 500, and the webhook ingress answers 503 (never hangs) when Kafka does not
acknowledge in time.

The real views (``create_app``) on aiohttp's test servers, one per listener (the API and the
webhook ingress); partition stores in place of the fold engine's (so queries really run), a
recording function in place of the Kafka producer.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.errors import KafkaConnectionError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from deliverytrack.models.codec import encode_record
from deliverytrack.models.settings import Settings
from deliverytrack.streams.providers.base import MAX_REPORTS_PER_REQUEST
from deliverytrack.streams.query.service import QueryService
from deliverytrack.streams.state.store import PartitionStore, Position
from deliverytrack.streams.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from deliverytrack.streams.worker.app import DeliveryTrackApp, create_app
from deliverytrack.tables.fold import fold
from tests.factories import T0, send_recorded_factory

GEN_SECRET = "whsec-gen"
TOKEN = "tok-native"
PARTITIONS = 2
MESSAGES = [f"m-{i}" for i in range(12)]

Published = list[tuple[str, bytes, bytes]]


@dataclass
class Answer:
    status: int
    raw: bytes
    content_type: str

    @property
    def json(self) -> Any:
        return orjson.loads(self.raw)


@dataclass
class Api:
    app: DeliveryTrackApp
    client: TestClient[Any, Any]
    hooks: TestClient[Any, Any]
    """The webhook listener: ``/webhooks/...`` requests go there."""
    published: Published = field(default_factory=list)

    def listener(self, path: str | URL | bytes) -> TestClient[Any, Any]:
        text = path.decode("latin-1") if isinstance(path, bytes) else str(path)
        return self.hooks if "/webhooks/" in text else self.client

    async def call(
        self,
        method: str,
        path: str | URL,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: list[tuple[str, str]] | None = None,
    ) -> Answer:
        client = self.listener(path)
        if isinstance(path, URL):  # already encoded, sent as is
            url = URL(f"http://{client.host}:{client.port}{path}", encoded=True)
            response = await client.session.request(method, url, data=body, headers=headers)
        else:
            response = await client.request(method, path, data=body, headers=headers, params=params)
        async with response:
            return Answer(response.status, await response.read(), response.content_type)

    async def publish(self, topic: str, key: bytes, value: bytes) -> Any:
        self.published.append((topic, key, value))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def app_settings(tmp: Path) -> Settings:
    return Settings(
        data_dir=tmp / "data",
        partitions=PARTITIONS,
        providers={
            "gen": {"kind": "none", "webhookSecret": GEN_SECRET},
            "sol": {"kind": "solapi", "apiKey": "k", "apiSecret": "s", "webhookSecret": TOKEN},
            "iw": {"kind": "iwinv", "apiKey": "k", "webhookSecret": TOKEN},
        },
    )


@pytest.fixture(scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    tmp = tmp_path_factory.mktemp("http")
    app = create_app(app_settings(tmp))
    engine = app.engine
    for partition in range(PARTITIONS):
        engine.partitions.attach(partition, PartitionStore(tmp / f"p{partition}.db"), ready=True)
    for i, mid in enumerate(MESSAGES):
        record, _ = fold(
            None,
            send_recorded_factory(mid, provider_id="gen", requested_at=T0 + timedelta(minutes=i)),
        )
        assert record is not None
        engine.store(engine.partition_of(mid)).write(
            {mid: (None, record, encode_record(record))}, Position()
        )
    app.queries.gather_deadline_s = 0.5

    async def emit_due_checks(now: Any) -> int:  # the engine would publish them to Kafka
        return 0

    engine.timers.emit_due_checks = emit_due_checks  # type: ignore[method-assign]
    engine.ready.set()
    async with (
        TestClient(TestServer(app.web.web_app)) as client,  # type: ignore[attr-defined]
        TestClient(TestServer(app.webhook_listener.app)) as hooks,
    ):
        api = Api(app, client, hooks)
        app.webhooks._publish = api.publish
        yield api
    engine.partitions.close_all()


def signed(body: bytes, secret: str = GEN_SECRET) -> dict[str, str]:
    stamp = int(time.time())
    return {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(secret, stamp, body)}


NATIVE = {"X-Webhook-Token": TOKEN}


def webhook_headers(provider_id: str, body: bytes) -> dict[str, str]:
    return signed(body) if provider_id == "gen" else dict(NATIVE)


def assert_refused(answer: Answer, case: Any) -> str:
    """A 4xx with a JSON ``{"error": "<non-empty message>"}``."""
    assert 400 <= answer.status < 500, (case, answer.status, answer.raw[:300])
    assert answer.content_type == "application/json", (case, answer.content_type)
    message = answer.json["error"]
    assert isinstance(message, str) and message, case
    return message


def assert_no_500(answer: Answer, case: Any) -> None:
    assert answer.status < 500, (case, answer.status, answer.raw[:300])
    assert answer.content_type == "application/json", (case, answer.content_type)
    body = answer.json
    if answer.status >= 400:
        assert isinstance(body["error"], str) and body["error"], case


def js(value: Any) -> bytes:
    """JSON as Python writes it (big integers, NaN), which orjson does not."""
    return json.dumps(value).encode()


def deep(levels: int, leaf: bytes = b"1") -> bytes:
    return b'{"a":' * levels + leaf + b"}" * levels


# --- the cases named in issue 13 (each gave 500 before) ----------------------------------------


SIGN = {"sign": "at run time"}
"""Headers placeholder: signed when the test runs (a signature made at collection time goes
stale when the suite runs longer than the replay window)."""


def _named_cases() -> list[tuple[str, str, str, bytes | None, dict[str, str] | None, int, str]]:
    """(name, method, path, body, headers, expected status, words of the message)."""
    good = orjson.dumps({"providerMessageId": "pm-1", "status": "DELIVERED"})
    long_event = orjson.dumps({"providerMessageId": "pm-1", "status": "SENT", "eventId": "e" * 600})
    overflow = orjson.dumps(
        {"providerMessageId": "pm-1", "status": "SENT", "sentAt": "9999-12-31T23:59:59-01:00"}
    )
    nested = b"[" * 100_000 + b"]" * 100_000
    return [
        (
            "400-digit timestamp header",
            "POST",
            "/webhooks/gen",
            good,
            {TIMESTAMP_HEADER: "9" * 400, SIGNATURE_HEADER: "v1=00"},
            401,
            "unix seconds",
        ),
        (
            "eventId over 512",
            "POST",
            "/webhooks/gen",
            long_event,
            SIGN,
            400,
            "eventId",
        ),
        ("date overflow", "POST", "/webhooks/gen", overflow, SIGN, 400, "sentAt"),
        ("100,000-deep SOLAPI", "POST", "/webhooks/sol", nested, NATIVE, 400, "nested too deeply"),
        ("100,000-deep IWINV", "POST", "/webhooks/iw", nested, NATIVE, 400, "nested too deeply"),
        ("100,000-deep generic", "POST", "/webhooks/gen", nested, SIGN, 400, "depth"),
        ("due before 1970 (ms)", "GET", "/records/due?now=-1", None, None, 400, "before 1970"),
        (
            "due before 1970 (ISO)",
            "GET",
            "/records/due?now=1969-12-31T23:59:59Z",
            None,
            None,
            400,
            "before 1970",
        ),
        ("internal query []", "POST", "/internal/query", b"[]", None, 400, "JSON object"),
        ("internal query 1", "POST", "/internal/query", b"1", None, 400, "JSON object"),
        ("internal query 'x'", "POST", "/internal/query", b'"x"', None, 400, "JSON object"),
        ("internal query null", "POST", "/internal/query", b"null", None, 400, "JSON object"),
    ]


@pytest.mark.parametrize(
    ("name", "method", "path", "body", "headers", "status", "words"),
    _named_cases(),
    ids=[case[0] for case in _named_cases()],
)
async def test_the_requests_named_in_the_issue_are_refused_with_a_message(
    api: Api,
    name: str,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str] | None,
    status: int,
    words: str,
) -> None:
    before = len(api.published)
    if headers is SIGN:
        headers = signed(body or b"")
    answer = await api.call(method, path, body, headers)
    message = assert_refused(answer, name)
    assert answer.status == status, (name, message)
    assert words in message, (name, message)
    assert len(api.published) == before


# --- webhooks: a corpus per adapter ------------------------------------------------------------


def _report(provider_id: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "gen": {"providerMessageId": "pm-1", "status": "DELIVERED"},
        "sol": {"messageId": "M4V1", "statusCode": "4000"},
        "iw": {"seqNo": 1, "statusCode": "OK"},
    }[provider_id]
    return {**base, **fields}


ID_FIELD = {"gen": "providerMessageId", "sol": "messageId", "iw": "seqNo"}
DATE_FIELDS = {
    "gen": ("sentAt", "deliveredAt", "failedAt"),
    "sol": ("dateCompleted", "dateProcessed", "dateUpdated"),
    "iw": ("sendDate", "receiveDate"),
}
HOSTILE_DATES = [
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+01:00",
    "0001-01-01 00:00:00",
    "1969-12-31T23:59:59Z",
    "9500-01-01T00:00:00Z",
    "NaN",
    "2026-13-45T99:99:99Z",
    "9" * 400,
    "",
]
HOSTILE_JSON_VALUES: list[Any] = [
    None,
    True,
    -1,
    2**70,
    1.5,
    "",
    " ",
    "x" * 600,
    "\u0000",
    "\U0001f4a9",
    [],
    {},
    [1, 2],
    {"a": {"b": [1]}},
]


def webhook_corpus(provider_id: str) -> list[tuple[str, bytes]]:
    """Bodies that must never make the ingress answer 500."""
    one = js(_report(provider_id))
    bodies: list[tuple[str, bytes]] = [
        ("empty", b""),
        ("space", b" "),
        ("truncated", one[:-1]),
        ("not json", b"{nope"),
        ("[]", b"[]"),
        ("{}", b"{}"),
        ("null", b"null"),
        ("1", b"1"),
        ('"x"', b'"x"'),
        ("true", b"true"),
        ("NaN", b"NaN"),
        ("1e400", b"1e400"),
        ("5000 digits", b"9" * 5000),
        ("invalid utf-8", b"\xff\xfe\x00"),
        ("invalid utf-8 in a string", b'{"messageId": "\xff"}'),
        ("lone surrogate", one[:-1] + b',"x":"\\ud800"}'),
        ("list of scalars", b"[1, 2, 3]"),
        ("deep objects", deep(100_000)),
        ("deep arrays", b"[" * 100_000 + b"]" * 100_000),
        ("900 deep", deep(900)),
        ("300 deep", deep(300)),
        ("deep raw", one[:-1] + b',"raw":' + deep(300) + b"}"),
        ("deep extra field", one[:-1] + b',"x":' + deep(600) + b"}"),
        ("over the cap", js([_report(provider_id)] * (MAX_REPORTS_PER_REQUEST + 1))),
        ("envelope not a list", b'{"reports": 1, "messageList": "x", "list": 2, "data": null}'),
        ("envelope of scalars", b'{"reports": [1], "messageList": {"a": 1}, "list": [null]}'),
        ("id too long", js(_report(provider_id, **{ID_FIELD[provider_id]: "i" * 600}))),
        ("id 512", js(_report(provider_id, **{ID_FIELD[provider_id]: "i" * 512}))),
        ("eventId too long", js(_report(provider_id, eventId="e" * 600))),
        ("status garbage", js(_report(provider_id, status="LOST", statusCode={}))),
        ("nan inside", one[:-1] + b',"price": NaN, "fee": Infinity, "big": 1e999}'),
    ]
    for field_name in DATE_FIELDS[provider_id]:
        for value in HOSTILE_DATES:
            bodies.append(
                (
                    f"{field_name}={value[:30]}",
                    js(_report(provider_id, **{field_name: value})),
                )
            )
    for key in (*_report(provider_id), "dateUpdated", "requestNo", "sendStatusCode"):
        for value in HOSTILE_JSON_VALUES:
            bodies.append((f"{key}={value!r:.30}", js(_report(provider_id, **{key: value}))))
    return bodies


@pytest.mark.parametrize("provider_id", ["gen", "sol", "iw"])
async def test_no_webhook_body_is_a_500(api: Api, provider_id: str) -> None:
    for name, body in webhook_corpus(provider_id):
        before = len(api.published)
        answer = await api.call(
            "POST", f"/webhooks/{provider_id}", body, webhook_headers(provider_id, body)
        )
        assert_no_500(answer, (provider_id, name))
        if answer.status != 200:
            assert len(api.published) == before, (provider_id, name)


@pytest.mark.parametrize("provider_id", ["sol", "iw"])
async def test_native_adapters_cap_the_reports_per_request(api: Api, provider_id: str) -> None:
    before = len(api.published)
    reports = [_report(provider_id, **{ID_FIELD[provider_id]: f"id-{i}"}) for i in range(1_001)]
    answer = await api.call("POST", f"/webhooks/{provider_id}", orjson.dumps(reports), dict(NATIVE))
    assert answer.status == 400
    assert f"at most {MAX_REPORTS_PER_REQUEST}" in answer.json["error"]
    assert len(api.published) == before
    answer = await api.call(
        "POST", f"/webhooks/{provider_id}", orjson.dumps(reports[:1_000]), dict(NATIVE)
    )
    assert answer.status == 200 and answer.json["accepted"] == 1_000
    assert len(api.published) == before + 1_000


async def test_verification_never_fails_with_a_500(api: Api) -> None:
    body = orjson.dumps(_report("gen"))
    for stamp in ("", " ", "-1", "1e9", "NaN", "9" * 5000, "\u0661\u0662\u0663", "0x10", "1.5"):
        answer = await api.call(
            "POST", "/webhooks/gen", body, {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: "v1=0"}
        )
        assert answer.status == 401, (stamp, answer.raw)
    for signature in ("", ",,,", "v1=" + "0" * 4_000, "v1=\u00e9\u4e2d", "\u00ff" * 50):
        headers = {**signed(body), SIGNATURE_HEADER: signature}
        answer = await api.call("POST", "/webhooks/gen", body, headers)
        assert answer.status == 401, (signature, answer.raw)
    for token in ("", "\u00e9\u00e9", "x" * 8_000, "Bearer"):
        answer = await api.call("POST", "/webhooks/sol", body, {"X-Webhook-Token": token})
        assert answer.status == 401, (token, answer.raw)
        answer = await api.call("POST", "/webhooks/iw", body, {"Authorization": f"Bearer {token}"})
        assert answer.status == 401, (token, answer.raw)


async def test_a_body_over_the_size_limit_is_a_json_413(api: Api) -> None:
    body = b'{"x": "' + b"a" * 2_000_000 + b'"}'
    answer = await api.call("POST", "/webhooks/sol", body, dict(NATIVE))
    assert answer.status == 413
    assert assert_refused(answer, "too large")


async def test_a_report_larger_than_the_worker_accepts_is_413(api: Api) -> None:
    limit = api.app.webhooks.max_report_bytes
    api.app.webhooks.max_report_bytes = 10_000
    try:
        body = orjson.dumps(_report("sol", padding="p" * 20_000))
        answer = await api.call("POST", "/webhooks/sol", body, dict(NATIVE))
    finally:
        api.app.webhooks.max_report_bytes = limit
    assert answer.status == 413
    assert "at most 10000" in answer.json["error"]


# --- the Kafka ack deadline ---------------------------------------------------------------------


async def test_the_ingress_answers_503_when_kafka_does_not_acknowledge_in_time(api: Api) -> None:
    ingress = api.app.webhooks
    body = orjson.dumps([_report("gen"), _report("gen", providerMessageId="pm-2")])

    async def never_acked(topic: str, key: bytes, value: bytes) -> Any:
        return asyncio.get_running_loop().create_future()  # enqueued, never acknowledged

    async def stuck_send(topic: str, key: bytes, value: bytes) -> Any:
        await asyncio.Event().wait()  # e.g. waiting for metadata of an unreachable broker

    async def broker_down(topic: str, key: bytes, value: bytes) -> Any:
        raise KafkaConnectionError("no broker")

    deadline = ingress.ack_timeout_s
    ingress.ack_timeout_s = 0.3
    try:
        for publish in (never_acked, stuck_send):
            ingress._publish = publish
            started = time.monotonic()
            answer = await api.call("POST", "/webhooks/gen", body, signed(body))
            assert answer.status == 503, answer.raw
            assert "did not acknowledge" in answer.json["error"]
            assert time.monotonic() - started < 3
        ingress._publish = broker_down
        answer = await api.call("POST", "/webhooks/gen", body, signed(body))
        assert answer.status == 503 and "retry later" in answer.json["error"]
    finally:
        ingress._publish = api.publish
        ingress.ack_timeout_s = deadline
    answer = await api.call("POST", "/webhooks/gen", body, signed(body))
    assert answer.status == 200 and answer.json["accepted"] == 2
    assert ingress.unacknowledged >= 2


def test_the_ack_deadline_has_a_sane_default(tmp_path: Path) -> None:
    app = create_app(app_settings(tmp_path))
    assert 0 < app.webhooks.ack_timeout_s <= 30


# --- the query API ------------------------------------------------------------------------------

HOSTILE_VALUES = [
    "",
    " ",
    "-1",
    "0",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "1e309",
    "1.5",
    "0x10",
    "9" * 400,
    "-" + "9" * 20,
    "18446744073709551616",
    "\u0661\u0662",
    "\u00b2",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59.999999Z",
    "9500-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",
    "1969-12-31T23:59:59.999Z",
    "1970-01-01T00:00:00Z",
    "2026-11-23T09:00:00",
    "2026-11-23T09:00:00Z",
    ",,,",
    "a,b",
    "DELIVERED",
    "sms",
    "providerId,type,status",
    "x" * 3_000,
    "\u0000",
    "\U0001f4a9",
    "[]",
    "{}",
    "null",
    "requestedAt",
    "asc",
]
ROUTE_PARAMS = {
    "/records": [
        "messageId",
        "providerId",
        "type",
        "status",
        "to",
        "from",
        "requestedAtFrom",
        "statusUpdatedAtTo",
        "limit",
        "offset",
        "orderBy",
        "orderDirection",
        "bogus",
    ],
    "/records/count": ["status", "type", "toHash", "requestedAtTo", "statusUpdatedAtFrom", "x"],
    "/records/count-by": ["groupBy", "providerId", "requestedAtFrom"],
    "/records/due": ["now", "limit", "offset"],
    "/stats": ["from", "to", "providerId", "type", "status", "bogus"],
}


@pytest.mark.parametrize("route", sorted(ROUTE_PARAMS))
async def test_no_query_parameter_is_a_500(api: Api, route: str) -> None:
    for name in ROUTE_PARAMS[route]:
        for value in HOSTILE_VALUES:
            params = [(name, value)]
            if route == "/records/count-by" and name != "groupBy":
                params.append(("groupBy", "status"))
            answer = await api.call("GET", route, params=params)
            assert_no_500(answer, (route, name, value))
        answer = await api.call("GET", route, params=[(name, "1"), (name, "2")])
        assert_no_500(answer, (route, name, "repeated"))


async def test_good_queries_still_answer(api: Api) -> None:
    answer = await api.call("GET", "/records/count")
    assert answer.status == 200 and answer.json == {"count": len(MESSAGES)}
    answer = await api.call("GET", "/records", params=[("limit", "3"), ("orderDirection", "asc")])
    assert answer.status == 200
    assert [r["messageId"] for r in answer.json["records"]] == MESSAGES[:3]
    answer = await api.call("GET", "/records/due", params=[("now", "1970-01-01T00:00:00Z")])
    assert answer.status == 200 and answer.json["records"] == []
    answer = await api.call("GET", f"/records/{MESSAGES[0]}/history")
    assert answer.status == 200 and answer.json["messageId"] == MESSAGES[0]


@pytest.mark.parametrize(
    "message_id",
    ["nope", "x" * 5_000, "%00", "%FF", "%ED%A0%80", "a%2Fb", "..", "%F0%9F%92%A9", "%C3%28"],
)
async def test_no_record_path_is_a_500(api: Api, message_id: str) -> None:
    for suffix in ("", "/history"):
        answer = await api.call("GET", URL(f"/records/{message_id}{suffix}"))
        assert_no_500(answer, (message_id, suffix))


@pytest.mark.parametrize("raw_query", ["now=%FF", "now=%ED%A0%80", "%FF=1", "limit=%C3%28", "=&&="])
async def test_undecodable_query_strings_are_not_a_500(api: Api, raw_query: str) -> None:
    for route in ROUTE_PARAMS:
        answer = await api.call("GET", URL(f"{route}?{raw_query}"))
        assert_no_500(answer, (route, raw_query))


def internal_bodies() -> list[bytes]:
    ok = {"partitions": [0, 1]}
    items: list[Any] = [
        {},
        {"partitions": "x"},
        {"partitions": [True]},
        {"partitions": [-1]},
        {"partitions": [1.5]},
        {"partitions": [2**70]},
        {"partitions": [None]},
        {**ok},
        {**ok, "op": "nope"},
        {**ok, "op": ["rows"]},
        {**ok, "op": "rows", "filter": "x"},
        {**ok, "op": "rows", "filter": [1]},
        {**ok, "op": "rows", "filter": {"requestedAtFrom": "1960-01-01T00:00:00Z"}},
        {**ok, "op": "rows", "filter": {"requestedAtTo": "9999-12-31T23:59:59-01:00"}},
        {**ok, "op": "rows", "filter": {"status": ["NOPE"]}},
        {**ok, "op": "rows", "filter": {"messageId": [1, {}]}},
        {**ok, "op": "rows", "filter": {"bogus": 1}},
        {**ok, "op": "list"},
        {**ok, "op": "list", "options": "x"},
        {**ok, "op": "list", "options": {"limit": -1}},
        {**ok, "op": "list", "options": {"limit": 2**70}},
        {**ok, "op": "list", "options": {"orderBy": "x"}},
        {**ok, "op": "due"},
        {**ok, "op": "due", "now": "2026-11-23T09:00:00", "limit": 1},
        {**ok, "op": "due", "now": "1960-01-01T00:00:00Z", "limit": 1},
        {**ok, "op": "due", "now": "9999-12-31T23:59:59-01:00", "limit": 1},
        {**ok, "op": "due", "now": 12345, "limit": 1},
        {**ok, "op": "due", "now": "NaN", "limit": 1},
        {**ok, "op": "due", "now": "2026-11-23T09:00:00Z", "limit": -1},
        {**ok, "op": "due", "now": "2026-11-23T09:00:00Z", "limit": "1"},
        {**ok, "op": "due", "now": "2026-11-23T09:00:00Z", "limit": 1e300},
        {**ok, "op": "get"},
        {**ok, "op": "get", "messageId": 5},
        {**ok, "op": "get", "messageId": ""},
        {**ok, "op": "get", "messageId": "x" * 100_000},
    ]
    return [js(item) for item in items] + [
        b"",
        b"{",
        b"\xff",
        b'{"partitions": [0], "op": "get", "messageId": "\\ud800"}',
        deep(100_000),
        b'{"partitions": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
    ]


async def test_no_internal_query_body_is_a_500(api: Api) -> None:
    for body in internal_bodies():
        answer = await api.call("POST", "/internal/query", body)
        assert_no_500(answer, body[:120])
    good = orjson.dumps({"partitions": [0, 1], "op": "rows", "filter": {}})
    answer = await api.call("POST", "/internal/query", good)
    assert answer.status == 200 and set(answer.json["partitions"]) == {"0", "1"}


# --- every route, method and content type ------------------------------------------------------

ROUTES = [
    "/health",
    "/admin/due-scan",
    "/webhooks/gen",
    "/webhooks/sol",
    "/webhooks/nobody",
    "/records",
    "/records/count",
    "/records/count-by",
    "/records/due",
    "/records/m-1",
    "/records/m-1/history",
    "/stats",
    "/internal/query",
    "/no/such/route",
]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_every_route_and_method_answers_without_a_500(api: Api, method: str) -> None:
    bodies: list[tuple[bytes | None, dict[str, str]]] = [
        (None, {}),
        (b"{}", {"Content-Type": "application/json"}),
        (b"a=1&b=2", {"Content-Type": "application/x-www-form-urlencoded"}),
        (b"\x00\xff" * 100, {"Content-Type": "application/octet-stream"}),
        (b"--x\r\n\r\n--x--", {"Content-Type": "multipart/form-data; boundary=x"}),
    ]
    for route in ROUTES:
        for body, headers in bodies:
            answer = await api.call(method, route, body, headers)
            assert_no_500(answer, (method, route, body))


async def test_a_server_bug_is_still_a_500_not_a_400(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(QueryService, "count", broken)
    answer = await api.call("GET", "/records/count")
    assert answer.status == 500
    assert answer.json == {"error": "internal error (logged by the worker)"}


# --- random requests ----------------------------------------------------------------------------

_names = st.sampled_from(
    sorted({name for names in ROUTE_PARAMS.values() for name in names} | {"groupBy", "from"})
) | st.text(max_size=8)
_values = st.sampled_from(HOSTILE_VALUES) | st.text(max_size=40) | st.integers().map(str)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    route=st.sampled_from(sorted(ROUTE_PARAMS)),
    params=st.lists(st.tuples(_names, _values), max_size=4),
)
async def test_random_query_parameters_are_never_a_500(
    api: Api, route: str, params: list[tuple[str, str]]
) -> None:
    answer = await api.call("GET", route, params=params)
    if answer.status in (400, 414) and answer.content_type == "text/plain":
        # aiohttp's HTTP parser refuses a request line over 8,190 bytes before any route runs
        # (plain text, see docs/http-api.md); anything shorter must reach our JSON errors.
        assert len(urlencode(params)) + len(route) > 8_000, (route, params)
        return
    assert_no_500(answer, (route, params))


_json_leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
_json = st.recursive(
    _json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "providerMessageId",
                    "status",
                    "eventId",
                    "sentAt",
                    "raw",
                    "reports",
                    "messageId",
                    "statusCode",
                    "dateCompleted",
                    "messageList",
                    "seqNo",
                    "requestNo",
                    "sendDate",
                    "list",
                    "data",
                    "partitions",
                    "op",
                    "filter",
                    "options",
                    "now",
                    "limit",
                ]
            )
            | st.text(max_size=6),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    target=st.sampled_from(["/webhooks/gen", "/webhooks/sol", "/webhooks/iw", "/internal/query"]),
    payload=_json,
)
async def test_random_json_bodies_are_never_a_500(api: Api, target: str, payload: Any) -> None:
    body = js(payload)
    provider_id = target.rsplit("/", 1)[-1]
    headers = webhook_headers(provider_id, body) if target.startswith("/webhooks") else {}
    answer = await api.call("POST", target, body, headers)
    assert_no_500(answer, (target, body[:200]))


# --- bytes no HTTP client library sends --------------------------------------------------------


async def raw_status(api: Api, request: bytes) -> tuple[int, bytes]:
    client = api.listener(request.split(b"\r\n", 1)[0])
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
    finally:
        writer.close()
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    ("name", "start", "headers"),
    [
        ("invalid utf-8 token", b"POST /webhooks/sol", b"X-Webhook-Token: \xff\xfe\r\n"),
        ("invalid utf-8 bearer", b"POST /webhooks/iw", b"Authorization: Bearer \xff\r\n"),
        ("invalid utf-8 signature", b"POST /webhooks/gen", b"X-DeliveryTrack-Signature: \xff\r\n"),
        ("invalid utf-8 timestamp", b"POST /webhooks/gen", b"X-DeliveryTrack-Timestamp: \xff\r\n"),
        ("invalid utf-8 path", b"GET /records/\xff\xfe", b""),
        ("invalid utf-8 query", b"GET /records?status=\xff", b""),
        ("invalid utf-8 query token", b"POST /webhooks/sol?token=\xff", b""),
        ("corrupt gzip webhook", b"POST /webhooks/sol", b"Content-Encoding: gzip\r\n"),
        ("corrupt deflate query", b"POST /internal/query", b"Content-Encoding: deflate\r\n"),
        ("unknown encoding", b"POST /webhooks/iw", b"Content-Encoding: br\r\n"),
        ("bad chunking", b"POST /webhooks/sol", b"Transfer-Encoding: chunked\r\n"),
    ],
)
async def test_undecodable_bytes_in_a_request_are_not_a_500(
    api: Api, name: str, start: bytes, headers: bytes
) -> None:
    body = orjson.dumps(_report("sol"))
    if b"/webhooks/gen" in start:
        stamp = str(int(time.time())).encode()
        if b"Timestamp" not in headers:
            headers += b"X-DeliveryTrack-Timestamp: " + stamp + b"\r\n"
        if b"Signature" not in headers:
            headers += b"X-DeliveryTrack-Signature: v1=00\r\n"
    request = (
        start
        + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\n"
        + headers
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    status, answer = await raw_status(api, request)
    assert 400 <= status < 500, (name, status, answer[:300])


def test_an_error_message_that_is_not_valid_unicode_is_still_json() -> None:
    from deliverytrack.streams.http.errors import dumps_json

    assert json.loads(dumps_json({"error": "token \udcff"})) == {"error": "token \udcff"}


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/stats?from=9999-12-31T23:59:59.999999Z", "from"),
        ("/stats?to=9500-01-01T00:00:00Z", "to"),
        ("/records?requestedAtTo=9500-01-01T00:00:00Z", "requestedAtTo"),
        ("/records/count?statusUpdatedAtFrom=9999-12-31T23:59:59-01:00", "statusUpdatedAtFrom"),
    ],
)
async def test_a_time_the_filter_refuses_is_named_by_its_parameter(
    api: Api, path: str, param: str
) -> None:
    """Whatever range the models allow, a refused bound is a 400 naming the parameter (the
    period of /stats was validated only while answering, a 500)."""
    answer = await api.call("GET", path)
    assert_no_500(answer, path)
    if answer.status != 200:
        assert answer.status == 400 and answer.json["error"].startswith(f"{param}:"), answer.json
