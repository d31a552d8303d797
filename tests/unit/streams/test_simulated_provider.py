"""The simulated provider over real loopback HTTP: server behaviour and the client adapter.

Also the retry classification from providers/base.py (kmsg-behaviour 1.5, 3.3).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from deliverytrack.models.enums import MessageType, TrackingStatus
from deliverytrack.streams.providers.base import (
    NON_RETRYABLE_CODES,
    RETRYABLE_CODES,
    ProviderError,
    StatusProvider,
    StatusQuery,
    code_for_http_status,
    is_retryable,
)
from deliverytrack.streams.providers.simulated import (
    SimulatedProvider,
    SimulatedProviderConfig,
    SimulatedProviderServer,
    main,
)

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
S = TrackingStatus


class FakeClock:
    """The server's clock, moved by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += timedelta(milliseconds=ms)


def query(provider_message_id: str) -> StatusQuery:
    return StatusQuery(
        provider_message_id=provider_message_id,
        type=MessageType.SMS,
        to="01012345678",
        requested_at=T0,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def server(clock: FakeClock) -> AsyncIterator[SimulatedProviderServer]:
    sim = SimulatedProviderServer(clock=clock)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
async def provider(server: SimulatedProviderServer) -> AsyncIterator[SimulatedProvider]:
    assert server.base_url is not None
    client = SimulatedProvider("sim", server.base_url, timeout_s=2.0)
    try:
        yield client
    finally:
        await client.close()


async def send(provider: SimulatedProvider, outcome: str, delay_ms: int = 2000) -> str:
    answer = await provider.send("01012345678", "SMS", outcome=outcome, delay_ms=delay_ms)
    pmid = answer["providerMessageId"]
    assert isinstance(pmid, str)
    return pmid


async def stats(provider: SimulatedProvider) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{provider.base_url}/v1/stats") as response:
            assert response.status == 200
            body: dict[str, Any] = await response.json()
            return body


async def post(base_url: str, path: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        kwargs: dict[str, Any] = {"data": body} if isinstance(body, str) else {"json": body}
        async with session.post(f"{base_url}{path}", **kwargs) as response:
            return response.status, await response.json()


# --- the adapter's contract ----------------------------------------------------------------------


async def test_adapter_is_a_status_provider(provider: SimulatedProvider) -> None:
    assert isinstance(provider, StatusProvider)
    assert provider.supports_status is True
    assert provider.provider_id == "sim"


async def test_send_answers_with_sequential_ids_and_accepted_at(
    provider: SimulatedProvider,
) -> None:
    first = await provider.send("01012345678", "SMS", message_id="msg-1")
    second = await provider.send("01012345678", MessageType.ALIMTALK)
    assert first == {
        "providerMessageId": "sim-1",
        "acceptedAt": "2026-11-23T09:00:00Z",
        "messageId": "msg-1",
    }
    assert second["providerMessageId"] == "sim-2"


# --- resolution over time ------------------------------------------------------------------------


async def test_delivered_after_the_delay(provider: SimulatedProvider, clock: FakeClock) -> None:
    pmid = await send(provider, "DELIVERED", delay_ms=2000)

    before = await provider.get_delivery_status(query(pmid))
    assert before is not None
    assert before.status is S.SENT
    assert (before.status_code, before.status_message) == ("3000", "sent to carrier")
    assert before.sent_at == T0
    assert before.delivered_at is None

    clock.advance(1999)
    still = await provider.get_delivery_status(query(pmid))
    assert still is not None and still.status is S.SENT

    clock.advance(1)
    after = await provider.get_delivery_status(query(pmid))
    assert after is not None
    assert after.status is S.DELIVERED
    assert (after.status_code, after.status_message) == ("4000", "delivered")
    assert after.sent_at == T0
    assert after.delivered_at == T0 + timedelta(seconds=2)
    assert after.failed_at is None
    assert after.raw is not None
    assert after.raw["providerMessageId"] == pmid
    assert after.raw["deliveredAt"] == "2026-11-23T09:00:02Z"


async def test_failed_after_the_delay(provider: SimulatedProvider, clock: FakeClock) -> None:
    pmid = await send(provider, "FAILED", delay_ms=500)
    clock.advance(500)
    result = await provider.get_delivery_status(query(pmid))
    assert result is not None
    assert result.status is S.FAILED
    assert (result.status_code, result.status_message) == ("3104", "recipient unreachable")
    assert result.failed_at == T0 + timedelta(milliseconds=500)
    assert result.delivered_at is None


async def test_pending_stays_sent(provider: SimulatedProvider, clock: FakeClock) -> None:
    pmid = await send(provider, "PENDING", delay_ms=0)
    clock.advance(7 * 24 * 3600 * 1000)
    result = await provider.get_delivery_status(query(pmid))
    assert result is not None
    assert result.status is S.SENT
    assert result.delivered_at is None and result.failed_at is None


# --- no result yet and errors --------------------------------------------------------------------


async def test_unknown_id_is_no_result_yet(provider: SimulatedProvider) -> None:
    assert await provider.get_delivery_status(query("sim-999")) is None


async def test_not_found_outcome_is_no_result_yet(provider: SimulatedProvider) -> None:
    pmid = await send(provider, "NOT_FOUND", delay_ms=0)
    assert await provider.get_delivery_status(query(pmid)) is None


async def test_503_is_a_retryable_error(provider: SimulatedProvider) -> None:
    pmid = await send(provider, "ERROR_RETRYABLE")
    with pytest.raises(ProviderError) as caught:
        await provider.get_delivery_status(query(pmid))
    error = caught.value
    assert error.code == "NETWORK_SERVICE_UNAVAILABLE"
    assert error.http_status == 503
    assert error.retryable is True
    assert error.message == "temporarily unavailable"


async def test_401_is_a_non_retryable_error(provider: SimulatedProvider) -> None:
    pmid = await send(provider, "ERROR_FATAL")
    with pytest.raises(ProviderError) as caught:
        await provider.get_delivery_status(query(pmid))
    error = caught.value
    assert error.code == "AUTHENTICATION_FAILED"
    assert error.http_status == 401
    assert error.retryable is False
    assert error.message == "invalid api key"


async def test_error_rate_one_makes_every_call_retryable(
    provider: SimulatedProvider, clock: FakeClock
) -> None:
    pmid = await send(provider, "DELIVERED", delay_ms=0)
    status, config = await post(provider.base_url, "/v1/config", {"errorRate": 1.0})
    assert status == 200 and config["errorRate"] == 1.0
    for _ in range(3):
        with pytest.raises(ProviderError) as caught:
            await provider.get_delivery_status(query(pmid))
        assert caught.value.retryable and caught.value.http_status == 503

    status, _ = await post(provider.base_url, "/v1/config", {"error_rate": 0.0})
    assert status == 200
    result = await provider.get_delivery_status(query(pmid))
    assert result is not None and result.status is S.DELIVERED


async def test_latency_beyond_the_client_timeout_is_a_retryable_network_timeout(
    server: SimulatedProviderServer,
) -> None:
    assert server.base_url is not None
    server.update_config({"latencyMs": 400})
    client = SimulatedProvider("sim", server.base_url, timeout_s=0.05)
    try:
        pmid = (await client.send("01012345678", "SMS", outcome="DELIVERED"))["providerMessageId"]
        started = time.monotonic()
        with pytest.raises(ProviderError) as caught:
            await client.get_delivery_status(query(pmid))
        assert time.monotonic() - started < 0.3
    finally:
        await client.close()
    assert caught.value.code == "NETWORK_TIMEOUT"
    assert caught.value.retryable is True
    assert server.status_calls == {pmid: 1}


async def test_connection_refused_is_a_retryable_network_error() -> None:
    sim = SimulatedProviderServer()
    base_url = await sim.start()
    await sim.stop()  # the port is free again: nothing listens
    client = SimulatedProvider("sim", base_url, timeout_s=1.0)
    try:
        with pytest.raises(ProviderError) as caught:
            await client.get_delivery_status(query("sim-1"))
    finally:
        await client.close()
    assert caught.value.code == "NETWORK_ERROR"
    assert caught.value.retryable is True


# --- stats ---------------------------------------------------------------------------------------


async def test_stats_count_status_calls_per_message(
    provider: SimulatedProvider, clock: FakeClock
) -> None:
    first = await send(provider, "DELIVERED")
    second = await send(provider, "ERROR_FATAL")
    for _ in range(3):
        await provider.get_delivery_status(query(first))
        clock.advance(1000)
    with pytest.raises(ProviderError):
        await provider.get_delivery_status(query(second))
    await provider.get_delivery_status(query("sim-404"))

    body = await stats(provider)
    assert body["sends"] == 2
    assert body["statusCalls"] == {first: 3, second: 1, "sim-404": 1}
    assert body["statusCallTimes"][first] == [
        "2026-11-23T09:00:00Z",
        "2026-11-23T09:00:01Z",
        "2026-11-23T09:00:02Z",
    ]


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"type": "SMS"},
        {"to": "", "type": "SMS"},
        {"to": "010", "type": "PIGEON"},
        {"to": "010", "type": "SMS", "outcome": "LOST"},
        {"to": "010", "type": "SMS", "delayMs": -1},
        {"to": "010", "type": "SMS", "delayMs": "10"},
        {"to": "010", "type": "SMS", "surprise": 1},
        ["not", "an", "object"],
        "{not json",
    ],
    ids=[
        "no-to",
        "blank-to",
        "bad-type",
        "bad-outcome",
        "negative-delay",
        "string-delay",
        "extra-field",
        "array",
        "not-json",
    ],
)
async def test_bad_send_is_400(provider: SimulatedProvider, body: Any) -> None:
    status, answer = await post(provider.base_url, "/v1/messages", body)
    assert status == 400
    assert isinstance(answer["error"], str) and answer["error"]
    assert (await stats(provider))["sends"] == 0


async def test_send_helper_raises_on_400(provider: SimulatedProvider) -> None:
    with pytest.raises(ProviderError) as caught:
        await provider.send("010", "PIGEON")
    assert caught.value.http_status == 400
    assert caught.value.retryable is False


@pytest.mark.parametrize(
    "body",
    [{"errorRate": 1.5}, {"latencyMs": -1}, {"outcomeMix": {"LOST": 1.0}}, {"nope": 1}],
    ids=["error-rate", "latency", "mix", "unknown"],
)
async def test_bad_config_is_400_and_keeps_the_old_config(
    server: SimulatedProviderServer, body: dict[str, Any]
) -> None:
    assert server.base_url is not None
    status, answer = await post(server.base_url, "/v1/config", body)
    assert status == 400 and answer["error"]
    assert server.config == SimulatedProviderConfig()


# --- determinism and configuration ---------------------------------------------------------------


def test_config_defaults_and_camel_case_aliases() -> None:
    config = SimulatedProviderConfig()
    assert config.model_dump(by_alias=True) == {
        "deliveryDelayMsMin": 1000,
        "deliveryDelayMsMax": 5000,
        "outcomeMix": {"DELIVERED": 0.85, "FAILED": 0.10, "PENDING": 0.05},
        "errorRate": 0.0,
        "latencyMs": 0,
        "seed": 7,
    }
    assert SimulatedProviderConfig.model_validate({"errorRate": 0.5}).error_rate == 0.5
    with pytest.raises(ValueError):
        SimulatedProviderConfig(delivery_delay_ms_min=10, delivery_delay_ms_max=5)


async def test_drawn_outcomes_and_delays_are_deterministic_per_seed() -> None:
    def draws(seed: int) -> list[tuple[str, int]]:
        sim = SimulatedProviderServer(SimulatedProviderConfig(seed=seed), clock=FakeClock())
        from deliverytrack.streams.providers.simulated import SendRequest

        request = SendRequest(to="010", type=MessageType.SMS)
        return [(m.outcome, m.delay_ms) for m in (sim.accept(request) for _ in range(200))]

    seven = draws(7)
    assert seven == draws(7)
    assert seven != draws(8)
    assert {outcome for outcome, _ in seven} <= {"DELIVERED", "FAILED", "PENDING"}
    assert all(1000 <= delay <= 5000 for _, delay in seven)
    delivered = sum(outcome == "DELIVERED" for outcome, _ in seven)
    assert 150 <= delivered <= 190  # about 85 %


def test_cli_rejects_an_invalid_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--error-rate", "2"]) == 2
    assert "error_rate" in capsys.readouterr().err


# --- retry classification (base.py, kmsg-behaviour 1.5) ------------------------------------------


@pytest.mark.parametrize("code", sorted(RETRYABLE_CODES))
def test_retryable_codes(code: str) -> None:
    assert is_retryable(code) is True
    assert is_retryable(code, 400) is True  # a known code wins over the HTTP status


@pytest.mark.parametrize("code", sorted(NON_RETRYABLE_CODES))
def test_non_retryable_codes(code: str) -> None:
    assert is_retryable(code) is False
    assert is_retryable(code, 503) is False


@pytest.mark.parametrize(
    ("http_status", "retryable"),
    [(None, False), (400, False), (404, False), (408, True), (425, True), (429, True),
     (500, True), (503, True), (599, True)],
)  # fmt: skip
def test_unknown_codes_go_by_http_status(http_status: int | None, retryable: bool) -> None:
    assert is_retryable("SOMETHING_ELSE", http_status) is retryable


@pytest.mark.parametrize(
    ("http_status", "code", "retryable"),
    [
        (400, "INVALID_REQUEST", False),
        (401, "AUTHENTICATION_FAILED", False),
        (403, "AUTHENTICATION_FAILED", False),
        (404, "INVALID_REQUEST", False),
        (408, "NETWORK_TIMEOUT", True),
        (429, "RATE_LIMIT_EXCEEDED", True),
        (500, "PROVIDER_ERROR", True),
        (502, "NETWORK_SERVICE_UNAVAILABLE", True),
        (503, "NETWORK_SERVICE_UNAVAILABLE", True),
        (504, "NETWORK_SERVICE_UNAVAILABLE", True),
        (507, "PROVIDER_ERROR", True),
    ],
)
def test_code_for_http_status(http_status: int, code: str, retryable: bool) -> None:
    assert code_for_http_status(http_status) == code
    error = ProviderError(code, "x", http_status=http_status)
    assert error.retryable is retryable


def test_provider_error_explicit_retryable_wins() -> None:
    assert ProviderError("INVALID_REQUEST", "x", retryable=True).retryable is True
    assert ProviderError("NETWORK_ERROR", "x", retryable=False).retryable is False
    assert str(ProviderError("NETWORK_ERROR", "boom")) == "NETWORK_ERROR: boom"
