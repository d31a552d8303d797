"""The two listeners and the API's tokens, on the real views (``create_app``) served by
aiohttp's test servers: every API route needs a bearer token (401 JSON without or with a
wrong one), /health answers a probe with its status only, tokens rotate, number filters need
a PII token while personal data protection is on, and the webhook listener serves nothing but
the ingress. Also: where the listeners may bind."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from deliverytrack.models.codec import encode_record
from deliverytrack.models.settings import Settings
from deliverytrack.streams.http.auth import (
    ApiTokens,
    ListenerConfigError,
    check_listeners,
    is_loopback,
)
from deliverytrack.streams.state.store import PartitionStore, Position
from deliverytrack.streams.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from deliverytrack.streams.worker.app import DeliveryTrackApp, create_app
from deliverytrack.tables.fold import fold
from tests.factories import send_recorded_factory

OLD = "old-token-0123456789abcdef"
NEW = "new-token-0123456789abcdef"
PII = "pii-token-0123456789abcdef"
WRONG = "not-a-token-0123456789abcd"
GEN_SECRET = "whsec-gen"
MESSAGES = [f"m-{i}" for i in range(4)]

API_ROUTES = [
    ("GET", "/records"),
    ("GET", "/records/count"),
    ("GET", "/records/count-by?groupBy=status"),
    ("GET", "/records/due"),
    ("GET", "/records/m-1"),
    ("GET", "/records/m-1/history"),
    ("GET", "/stats"),
    ("GET", "/stats/summary?from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z"),
    ("POST", "/internal/query"),
    ("POST", "/admin/due-scan"),
    ("GET", "/"),  # Faust's own index
    ("GET", "/no/such/route"),
    ("POST", "/webhooks/gen"),  # not served here: the webhook listener's
]


@dataclass
class Listeners:
    app: DeliveryTrackApp
    api: TestClient[Any, Any]
    hooks: TestClient[Any, Any]

    async def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        *,
        scheme: str = "Bearer",
        client: TestClient[Any, Any] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"{scheme} {token}"
        async with (client or self.api).request(method, path, data=body, headers=headers) as r:
            raw = await r.read()
            assert r.content_type == "application/json", (method, path, r.status, raw[:200])
            return r.status, orjson.loads(raw), dict(r.headers)


def secured_settings(tmp: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp / "data",
        "partitions": 2,
        "api_tokens": f"{OLD},{NEW}",
        "api_pii_tokens": PII,
        "pii": {"enabled": True, "storePlain": False, "activeKid": "k1", "hashKeys": {"k1": "h"}},
        "providers": {"gen": {"kind": "none", "webhookSecret": GEN_SECRET}},
    }
    values.update(overrides)
    return Settings(**values)


async def serve(app: DeliveryTrackApp, tmp: Path) -> AsyncIterator[Listeners]:
    engine = app.engine
    for partition in range(2):
        engine.partitions.attach(partition, PartitionStore(tmp / f"p{partition}.db"), ready=True)
    for mid in MESSAGES:
        record, _ = fold(
            None, send_recorded_factory(mid, provider_id="gen"), app.settings.fold_policy
        )
        assert record is not None
        engine.store(engine.partition_of(mid)).write(
            {mid: (None, record, encode_record(record))}, Position()
        )

    async def emit_due_checks(now: Any) -> int:
        return 0

    engine.timers.emit_due_checks = emit_due_checks  # type: ignore[method-assign]
    engine.ready.set()
    app.queries.gather_deadline_s = 0.5
    published: list[bytes] = []

    async def publish(topic: str, key: bytes, value: bytes) -> Any:
        import asyncio

        published.append(value)
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    app.webhooks._publish = publish
    async with (
        TestClient(TestServer(app.web.web_app)) as api,  # type: ignore[attr-defined]
        TestClient(TestServer(app.webhook_listener.app)) as hooks,
    ):
        yield Listeners(app, api, hooks)
    engine.partitions.close_all()


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Listeners]:
    async for listeners in serve(create_app(secured_settings(tmp_path)), tmp_path):
        yield listeners


# --- 401 on every route but /health -------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), API_ROUTES)
async def test_every_api_route_refuses_a_missing_or_wrong_token(
    secured: Listeners, method: str, path: str
) -> None:
    for token, scheme in (
        (None, "Bearer"),
        (WRONG, "Bearer"),
        (OLD[:-1], "Bearer"),  # a prefix of a real one
        (OLD + "x", "Bearer"),
        ("", "Bearer"),
        (OLD, "Basic"),  # the right secret, not as a bearer token
        (OLD, "Token"),
    ):
        status, body, headers = await secured.call(method, path, token, scheme=scheme)
        assert status == 401, (method, path, token, scheme, body)
        assert isinstance(body["error"], str) and body["error"]
        assert headers["WWW-Authenticate"].startswith('Bearer realm="deliverytrack"')
        assert OLD not in body["error"] and WRONG not in body["error"]
    status, body, _ = await secured.call(method, path)
    assert "Authorization: Bearer" in body["error"]  # says what to send


@pytest.mark.parametrize(("method", "path"), API_ROUTES)
async def test_every_token_of_the_rotation_is_accepted(
    secured: Listeners, method: str, path: str
) -> None:
    for token in (OLD, NEW, PII):
        status, body, _ = await secured.call(method, path, token)
        assert status != 401, (method, path, token, body)
        status_lower, _, _ = await secured.call(method, path, token, scheme="bearer")
        assert status_lower == status  # the scheme is case-insensitive (RFC 7235)


async def test_good_answers_with_a_token(secured: Listeners) -> None:
    status, body, _ = await secured.call("GET", "/records/count", NEW)
    assert (status, body) == (200, {"count": len(MESSAGES)})
    status, body, _ = await secured.call("GET", "/records/m-1", OLD)
    assert status == 200 and body["messageId"] == "m-1"
    query = orjson.dumps({"partitions": [0, 1], "op": "rows", "filter": {}})
    status, body, _ = await secured.call("POST", "/internal/query", OLD, body=query)
    assert status == 200 and set(body["partitions"]) == {"0", "1"}
    assert secured.app.api_tokens.refused == 0


async def test_refusals_are_counted_on_health(secured: Listeners) -> None:
    for _ in range(3):
        await secured.call("GET", "/records", WRONG)
    _, health, _ = await secured.call("GET", "/health", OLD)
    assert health["apiRequestsRefused"] == 3


# --- /health ------------------------------------------------------------------------------------


async def test_health_tells_a_probe_its_status_and_nothing_else(secured: Listeners) -> None:
    status, body, _ = await secured.call("GET", "/health")
    assert (status, body) == (200, {"status": "ok"})
    status, body, _ = await secured.call("GET", "/health", OLD)
    assert status == 200 and body["status"] == "ok"
    assert {"owners", "queryUrl", "events", "deadLetters"} <= set(body)
    status, body, _ = await secured.call("GET", "/health", WRONG)
    assert status == 401  # a token is checked where one is sent


async def test_health_of_a_failed_worker_says_failed_without_the_error(
    secured: Listeners,
) -> None:
    failure = secured.app.engine.failure
    failure.error = RuntimeError("broker kafka-secret-host:9093 said no")
    try:
        status, body, _ = await secured.call("GET", "/health")
        assert status == 503 and body == {"status": f"{failure.component} failed"}
        status, body, _ = await secured.call("GET", "/health", OLD)
        assert status == 503 and "kafka-secret-host" in body["error"]
        status, body, _ = await secured.call("GET", "/health", client=secured.hooks)
        assert (status, body) == (503, {"status": "unavailable"})
    finally:
        failure.error = None


# --- the phone-number oracle --------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/records", "/records/count", "/records/count-by"])
async def test_number_filters_need_a_pii_token_while_personal_data_is_protected(
    secured: Listeners, route: str
) -> None:
    group = "&groupBy=status" if route.endswith("count-by") else ""
    for query in ("to=01012345678", "from=0212345678", "to=01012345678,01099999999"):
        status, body, _ = await secured.call("GET", f"{route}?{query}{group}", OLD)
        assert status == 403, (route, query, body)
        assert "DELIVERYTRACK_API_PII_TOKENS" in body["error"]
        status, body, _ = await secured.call("GET", f"{route}?{query}{group}", PII)
        assert status == 200, (route, query, body)
    # A hash (which only the keys can produce) or "no sender" names no number.
    for query in ("toHash=abc", "from="):
        status, body, _ = await secured.call("GET", f"{route}?{query}{group}", OLD)
        assert status == 200, (route, query, body)


async def test_the_pii_token_finds_the_number(secured: Listeners) -> None:
    status, body, _ = await secured.call("GET", "/records/count?to=010-1234-5678", PII)
    assert (status, body) == (200, {"count": len(MESSAGES)})


async def test_without_personal_data_protection_any_token_filters_by_number(
    tmp_path: Path,
) -> None:
    settings = secured_settings(tmp_path, pii={"enabled": False}, api_pii_tokens="")
    async for listeners in serve(create_app(settings), tmp_path):
        status, body, _ = await listeners.call("GET", "/records/count?to=01012345678", OLD)
        assert (status, body) == (200, {"count": len(MESSAGES)})


# --- the webhook listener -----------------------------------------------------------------------


def signed(body: bytes) -> dict[str, str]:
    stamp = int(time.time())
    return {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(GEN_SECRET, stamp, body)}


async def test_the_webhook_listener_serves_the_ingress_and_a_bare_health(
    secured: Listeners,
) -> None:
    report = orjson.dumps({"providerMessageId": "pm-m-1", "status": "DELIVERED"})
    status, body, _ = await secured.call(
        "POST", "/webhooks/gen", client=secured.hooks, body=report, headers=signed(report)
    )
    assert status == 200 and body["accepted"] == 1
    status, body, _ = await secured.call(
        "POST", "/webhooks/gen", client=secured.hooks, body=report, headers={}
    )
    assert status == 401  # the provider's own signature, no API token involved
    status, body, _ = await secured.call("GET", "/health", client=secured.hooks)
    assert (status, body) == (200, {"status": "ok"})


@pytest.mark.parametrize(("method", "path"), API_ROUTES + [("GET", "/health/x")])
async def test_the_webhook_listener_serves_no_api_route_even_with_a_token(
    secured: Listeners, method: str, path: str
) -> None:
    if path.startswith("/webhooks/"):
        return
    for token in (None, OLD, PII):
        status, body, _ = await secured.call(method, path, token, client=secured.hooks)
        assert status in (404, 405), (method, path, token, status, body)
        assert "records" not in body and "partitions" not in body


async def test_the_api_listener_does_not_take_webhooks(secured: Listeners) -> None:
    report = orjson.dumps({"providerMessageId": "pm-m-1", "status": "DELIVERED"})
    status, _, _ = await secured.call(
        "POST", "/webhooks/gen", OLD, body=report, headers=signed(report)
    )
    assert status == 404


# --- no token configured: open, on loopback only ------------------------------------------------


async def test_without_tokens_the_api_is_open_on_loopback(tmp_path: Path) -> None:
    settings = secured_settings(tmp_path, api_tokens="", api_pii_tokens="")
    async for listeners in serve(create_app(settings), tmp_path):
        status, body, _ = await listeners.call("GET", "/records/count?to=01012345678")
        assert (status, body) == (200, {"count": len(MESSAGES)})
        status, body, _ = await listeners.call("GET", "/health")
        assert status == 200 and "owners" in body


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "rebind.attacker.example:6066"},  # DNS rebinding: the page's own name
        {"Host": "10.0.0.5:6066"},
        {"Origin": "https://attacker.example"},  # a page elsewhere posting to 127.0.0.1
        {"Origin": "null"},  # a sandboxed frame
    ],
)
async def test_an_open_api_answers_no_web_page_of_another_site(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    """Open (no token) means loopback only, but a browser on this machine reaches loopback
    too: a page whose name re-resolves to 127.0.0.1 (DNS rebinding) reads the API as its own
    origin, and any page can POST to it. Such requests name another host: refused (403)."""
    settings = secured_settings(tmp_path, api_tokens="", api_pii_tokens="")
    async for listeners in serve(create_app(settings), tmp_path):
        for method, path in [*API_ROUTES, ("GET", "/health"), ("GET", "/ui")]:
            status, body, _ = await listeners.call(method, path, headers=headers)
            assert status == 403, (method, path, status, body)
            assert "DELIVERYTRACK_API_TOKENS" in body["error"]
        for local in ("localhost:6066", "127.0.0.1", "[::1]:6066", "LOCALHOST"):
            status, _, _ = await listeners.call("GET", "/records/count", headers={"Host": local})
            assert status == 200, local
        same_origin = {"Origin": "http://127.0.0.1:6066"}
        status, _, _ = await listeners.call("POST", "/admin/due-scan", headers=same_origin)
        assert status == 200


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "::", "", "10.1.2.3", "worker.internal", "[::]"],  # noqa: S104 - not bound
)
def test_a_worker_refuses_an_open_api_off_loopback_and_says_why(tmp_path: Path, host: str) -> None:
    settings = Settings(data_dir=tmp_path, web_host=host)
    with pytest.raises(ListenerConfigError, match="DELIVERYTRACK_API_TOKENS") as refused:
        check_listeners(settings)
    assert "reads every tracking record" in str(refused.value)
    with pytest.raises(ListenerConfigError):
        create_app(settings)
    check_listeners(Settings(data_dir=tmp_path, web_host=host, api_tokens=OLD))
    check_listeners(Settings(data_dir=tmp_path, web_host=host, api_pii_tokens=PII))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)
    check_listeners(Settings(web_host=host))


def test_the_two_listeners_need_two_addresses() -> None:
    with pytest.raises(ListenerConfigError, match="different ports"):
        check_listeners(Settings(web_port=7000, webhook_port=7000))
    with pytest.raises(ListenerConfigError):
        check_listeners(
            Settings(web_port=7000, webhook_port=7000, webhook_host="::", api_tokens=OLD)
        )
    check_listeners(Settings(web_port=7000, webhook_port=7000, webhook_host="127.0.0.2"))
    check_listeners(Settings(web_port=7000, webhook_port=7001))


def test_tokens_are_kept_as_digests_only() -> None:
    tokens = ApiTokens([SecretStr(OLD)], [SecretStr(PII)], pii_enabled=True)
    kept = repr(vars(tokens)) if hasattr(tokens, "__dict__") else ""
    assert OLD not in kept and PII not in kept
    assert tokens.authenticate(f"Bearer {OLD}") is not None
    assert tokens.authenticate(f"Bearer  {OLD} ") is not None  # surrounding blanks
    assert tokens.authenticate(f"Bearer {OLD}\udcff") is None  # undecodable header octets
    assert tokens.authenticate("Bearer") is None
    caller = tokens.authenticate(f"Bearer {OLD}")
    assert caller is not None and not caller.may_filter_numbers
    caller = tokens.authenticate(f"Bearer {PII}")
    assert caller is not None and caller.may_filter_numbers
