"""A simulated provider: a real local HTTP status API (aiohttp) plus its client adapter.

The server accepts sends (``POST /v1/messages``) and answers status lookups
(``GET /v1/messages/{providerMessageId}/status``) the way a real provider would: ``SENT`` until
the message's delay has passed, then its outcome (DELIVERED, FAILED, or still SENT for PENDING).
Per-message outcomes can force error answers (503, 401, 404). ``GET /v1/stats`` counts status
calls, so tests can prove how often the tracker asked.

Run it on its own with ``python -m deliverytrack.streams.providers.simulated --port 8089``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, cast
from urllib.parse import quote

import aiohttp
from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from deliverytrack.models.enums import MessageType, TrackingStatus
from deliverytrack.models.events import ProviderStatus
from deliverytrack.streams.clock import utc_now
from deliverytrack.streams.providers.base import (
    ProviderError,
    StatusQuery,
    code_for_http_status,
    loads_provider_json,
    read_answer,
    shown_url,
)

Outcome = Literal["DELIVERED", "FAILED", "PENDING", "ERROR_RETRYABLE", "ERROR_FATAL", "NOT_FOUND"]
OUTCOMES: Final[tuple[str, ...]] = (
    "DELIVERED",
    "FAILED",
    "PENDING",
    "ERROR_RETRYABLE",
    "ERROR_FATAL",
    "NOT_FOUND",
)

# Provider status codes the simulator answers with.
SENT_CODE: Final = ("3000", "sent to carrier")
DELIVERED_CODE: Final = ("4000", "delivered")
FAILED_CODE: Final = ("3104", "recipient unreachable")


def _iso(value: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` suffix (a naive datetime is taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class _CamelModel(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, alias_generator=to_camel
    )


class SimulatedProviderConfig(_CamelModel):
    """How the simulated provider behaves. JSON field names are camelCase."""

    delivery_delay_ms_min: int = Field(default=1000, ge=0)
    delivery_delay_ms_max: int = Field(default=5000, ge=0)
    # Weights of the outcomes drawn for sends that name none. PENDING never resolves.
    outcome_mix: dict[str, float] = Field(
        default_factory=lambda: {"DELIVERED": 0.85, "FAILED": 0.10, "PENDING": 0.05}
    )
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    latency_ms: int = Field(default=0, ge=0)
    seed: int = 7

    @model_validator(mode="after")
    def _consistent(self) -> SimulatedProviderConfig:
        if self.delivery_delay_ms_min > self.delivery_delay_ms_max:
            raise ValueError("deliveryDelayMsMin must not exceed deliveryDelayMsMax")
        unknown = sorted(set(self.outcome_mix) - set(OUTCOMES))
        if unknown:
            raise ValueError(f"unknown outcomes in outcomeMix: {', '.join(unknown)}")
        if any(weight < 0 for weight in self.outcome_mix.values()):
            raise ValueError("outcomeMix weights must not be negative")
        if sum(self.outcome_mix.values()) <= 0:
            raise ValueError("outcomeMix needs a positive total weight")
        return self


class SendRequest(_CamelModel):
    """``POST /v1/messages`` body."""

    to: StrictStr = Field(min_length=1)
    type: MessageType
    outcome: Outcome | None = None
    delay_ms: StrictInt | None = Field(default=None, ge=0)
    message_id: StrictStr | None = None


@dataclass(slots=True)
class SimulatedMessage:
    """What the server remembers about one accepted send."""

    provider_message_id: str
    to: str
    type: MessageType
    accepted_at: datetime
    outcome: str
    delay_ms: int
    message_id: str | None = None

    @property
    def resolves_at(self) -> datetime:
        return self.accepted_at + timedelta(milliseconds=self.delay_ms)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(part) for part in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else str(err["msg"]))
    return "; ".join(parts)


class SimulatedProviderServer:
    """The simulated provider's HTTP API on a local port."""

    def __init__(
        self,
        config: SimulatedProviderConfig | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        access_log: bool = False,
    ) -> None:
        self._config = SimulatedProviderConfig() if config is None else config
        self.clock = clock
        self._access_log = access_log
        self._rng = random.Random(self._config.seed)  # noqa: S311 - a simulator, not crypto
        self._error_rng = random.Random(f"{self._config.seed}:errors")  # noqa: S311
        self._next_id = 0
        self.messages: dict[str, SimulatedMessage] = {}
        self.sends = 0
        self.status_calls: dict[str, int] = {}
        self.status_call_times: dict[str, list[datetime]] = {}
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = None
        self.app = self._build_app()

    # --- configuration --------------------------------------------------------------------------

    @property
    def config(self) -> SimulatedProviderConfig:
        return self._config

    def update_config(self, changes: Mapping[str, Any]) -> SimulatedProviderConfig:
        """Apply a partial change (field names or camelCase aliases); raises ValidationError."""
        fields = SimulatedProviderConfig.model_fields
        by_alias = {info.alias or name: name for name, info in fields.items()}
        merged: dict[str, Any] = self._config.model_dump()
        for key, value in changes.items():
            # An unknown key stays as given: the model (extra="forbid") rejects it.
            merged[key if key in fields else by_alias.get(key, key)] = value
        new = SimulatedProviderConfig.model_validate(merged)
        if new.seed != self._config.seed:
            self._rng = random.Random(new.seed)  # noqa: S311
            self._error_rng = random.Random(f"{new.seed}:errors")  # noqa: S311
        self._config = new
        return new

    # --- behaviour (usable without HTTP) --------------------------------------------------------

    def accept(self, request: SendRequest) -> SimulatedMessage:
        """Remember one send. Both draws happen on every send so the sequence stays stable."""
        config = self._config
        mix = config.outcome_mix
        drawn_outcome = self._rng.choices(list(mix), weights=list(mix.values()))[0]
        drawn_delay = self._rng.randint(config.delivery_delay_ms_min, config.delivery_delay_ms_max)
        self._next_id += 1
        self.sends += 1
        message = SimulatedMessage(
            provider_message_id=f"sim-{self._next_id}",
            to=request.to,
            type=request.type,
            accepted_at=self.clock(),
            outcome=request.outcome or drawn_outcome,
            delay_ms=drawn_delay if request.delay_ms is None else request.delay_ms,
            message_id=request.message_id,
        )
        self.messages[message.provider_message_id] = message
        return message

    def status_body(self, message: SimulatedMessage, now: datetime) -> dict[str, Any]:
        """The 200 answer for a message that resolves (outcome DELIVERED, FAILED or PENDING)."""
        body: dict[str, Any] = {
            "providerMessageId": message.provider_message_id,
            "status": TrackingStatus.SENT.value,
            "statusCode": SENT_CODE[0],
            "statusMessage": SENT_CODE[1],
            "sentAt": _iso(message.accepted_at),
        }
        if now < message.resolves_at:
            return body
        if message.outcome == "DELIVERED":
            body["status"] = TrackingStatus.DELIVERED.value
            body["statusCode"], body["statusMessage"] = DELIVERED_CODE
            body["deliveredAt"] = _iso(message.resolves_at)
        elif message.outcome == "FAILED":
            body["status"] = TrackingStatus.FAILED.value
            body["statusCode"], body["statusMessage"] = FAILED_CODE
            body["failedAt"] = _iso(message.resolves_at)
        return body

    def stats(self) -> dict[str, Any]:
        return {
            "statusCalls": dict(self.status_calls),
            "sends": self.sends,
            "statusCallTimes": {
                pmid: [_iso(at) for at in times] for pmid, times in self.status_call_times.items()
            },
        }

    # --- HTTP -----------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self._handle_send)
        app.router.add_get("/v1/messages/{providerMessageId}/status", self._handle_status)
        app.router.add_get("/v1/stats", self._handle_stats)
        app.router.add_get("/v1/config", self._handle_get_config)
        app.router.add_post("/v1/config", self._handle_set_config)
        return app

    async def _json_object(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "body must be JSON")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        return cast(dict[str, Any], body)

    async def _handle_send(self, request: web.Request) -> web.Response:
        body = await self._json_object(request)
        if isinstance(body, web.Response):
            return body
        try:
            send = SendRequest.model_validate(body)
        except ValidationError as exc:
            return _error(400, f"invalid request: {_validation_message(exc)}")
        message = self.accept(send)
        answer: dict[str, Any] = {
            "providerMessageId": message.provider_message_id,
            "acceptedAt": _iso(message.accepted_at),
        }
        if message.message_id is not None:
            answer["messageId"] = message.message_id
        return web.json_response(answer, status=201)

    async def _handle_status(self, request: web.Request) -> web.Response:
        pmid = request.match_info["providerMessageId"]
        self.status_calls[pmid] = self.status_calls.get(pmid, 0) + 1
        self.status_call_times.setdefault(pmid, []).append(self.clock())
        config = self._config
        if config.latency_ms > 0:
            await asyncio.sleep(config.latency_ms / 1000)
        if config.error_rate > 0 and self._error_rng.random() < config.error_rate:
            return _error(503, "temporarily unavailable")
        message = self.messages.get(pmid)
        if message is None or message.outcome == "NOT_FOUND":
            return _error(404, "not found")
        if message.outcome == "ERROR_RETRYABLE":
            return _error(503, "temporarily unavailable")
        if message.outcome == "ERROR_FATAL":
            return _error(401, "invalid api key")
        return web.json_response(self.status_body(message, self.clock()))

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _handle_get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self._config.model_dump(mode="json", by_alias=True))

    async def _handle_set_config(self, request: web.Request) -> web.Response:
        body = await self._json_object(request)
        if isinstance(body, web.Response):
            return body
        try:
            config = self.update_config(body)
        except ValidationError as exc:
            return _error(400, f"invalid config: {_validation_message(exc)}")
        return web.json_response(config.model_dump(mode="json", by_alias=True))

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 = a free port); returns the base URL."""
        if self._runner is not None:
            raise RuntimeError("server already started")
        # access_log=None turns aiohttp's access log off; otherwise it logs to "aiohttp.access".
        logging_kw: dict[str, Any] = {} if self._access_log else {"access_log": None}
        runner = web.AppRunner(
            self.app, handler_cancellation=True, shutdown_timeout=1.0, **logging_kw
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        url_host = "127.0.0.1" if host in ("", "0.0.0.0") else str(bound_host)  # noqa: S104
        if ":" in url_host:
            url_host = f"[{url_host}]"
        self.base_url = f"http://{url_host}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        self.base_url = None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> SimulatedProviderServer:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


# --- the client adapter --------------------------------------------------------------------------

_KNOWN_STATUSES: Final = frozenset(status.value for status in TrackingStatus)


class SimulatedProvider:
    """The StatusProvider for the simulated provider's HTTP API."""

    supports_status: bool = True

    def __init__(
        self,
        provider_id: str,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        bearer_token: str | None = None,
    ) -> None:
        self.provider_id = provider_id
        self._headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else {}
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._session = session
        self._owns_session = session is None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    async def _request(
        self, method: str, path: str, json_body: dict[str, Any] | None = None
    ) -> tuple[int, Any, str]:
        """(HTTP status, JSON body or None, text); maps transport failures to ProviderError."""
        url = f"{self.base_url}{path}"
        try:
            async with self._client().request(
                method,
                url,
                json=json_body,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                allow_redirects=False,
            ) as response:
                status, text = await read_answer(method, shown_url(url), response)
        except TimeoutError as exc:  # also aiohttp's ServerTimeoutError
            raise ProviderError(
                "NETWORK_TIMEOUT",
                f"{method} {shown_url(url)}: no answer within {self.timeout_s:g}s",
            ) from exc
        except aiohttp.ClientError as exc:
            raise ProviderError("NETWORK_ERROR", f"{method} {shown_url(url)}: {exc}") from exc
        try:
            body: Any = loads_provider_json(text) if text else None
        except ValueError:
            body = None
        return status, body, text

    @staticmethod
    def _http_error(status: int, body: Any, text: str) -> ProviderError:
        message = body.get("error") if isinstance(body, dict) else None
        if not isinstance(message, str) or not message:
            message = text.strip()[:200] or f"HTTP {status}"
        return ProviderError(code_for_http_status(status), message, http_status=status)

    async def get_delivery_status(self, query: StatusQuery) -> ProviderStatus | None:
        pmid = quote(query.provider_message_id, safe="")
        status, body, text = await self._request("GET", f"/v1/messages/{pmid}/status")
        if status == 404:
            return None
        if status != 200:
            raise self._http_error(status, body, text)
        if not isinstance(body, dict):
            raise ProviderError("PROVIDER_ERROR", "status answer is not a JSON object")
        raw_status = body.get("status")
        if raw_status not in _KNOWN_STATUSES:
            raise ProviderError("PROVIDER_ERROR", f"unknown provider status {raw_status!r}")
        try:
            return ProviderStatus.model_validate(
                {
                    "status": raw_status,
                    "statusCode": body.get("statusCode"),
                    "statusMessage": body.get("statusMessage"),
                    "sentAt": body.get("sentAt"),
                    "deliveredAt": body.get("deliveredAt"),
                    "failedAt": body.get("failedAt"),
                    "raw": body,
                }
            )
        except ValidationError as exc:
            raise ProviderError(
                "PROVIDER_ERROR", f"malformed status answer: {_validation_message(exc)}"
            ) from exc

    async def send(self, to: str, type: str, **kw: Any) -> dict[str, Any]:
        """POST /v1/messages; keyword fields (``outcome``, ``delay_ms``, ``message_id``) go
        camelCase. Returns the JSON answer (``providerMessageId``, ``acceptedAt``)."""
        payload: dict[str, Any] = {"to": to, "type": str(type)}
        payload.update({to_camel(key): value for key, value in kw.items() if value is not None})
        status, body, text = await self._request("POST", "/v1/messages", payload)
        if status != 201 or not isinstance(body, dict):
            raise self._http_error(status, body, text)
        return cast(dict[str, Any], body)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._owns_session and not session.closed:
            await session.close()


# --- command line --------------------------------------------------------------------------------


def _parse_mix(value: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in value.split(","):
        name, sep, weight = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected OUTCOME=WEIGHT, got {part!r}")
        try:
            mix[name.strip().upper()] = float(weight)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"bad weight in {part!r}") from exc
    return mix


def _build_parser() -> argparse.ArgumentParser:
    defaults = SimulatedProviderConfig()
    parser = argparse.ArgumentParser(
        prog="python -m deliverytrack.streams.providers.simulated",
        description="Run the simulated provider's HTTP status API in the foreground.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--delay-min-ms", type=int, default=defaults.delivery_delay_ms_min)
    parser.add_argument("--delay-max-ms", type=int, default=defaults.delivery_delay_ms_max)
    parser.add_argument(
        "--outcome-mix",
        type=_parse_mix,
        default=None,
        help="e.g. DELIVERED=0.85,FAILED=0.10,PENDING=0.05",
    )
    parser.add_argument("--error-rate", type=float, default=defaults.error_rate)
    parser.add_argument("--latency-ms", type=int, default=defaults.latency_ms)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--access-log", action="store_true", help="log every request")
    return parser


async def _serve(config: SimulatedProviderConfig, host: str, port: int, access_log: bool) -> None:
    server = SimulatedProviderServer(config, access_log=access_log)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    url = await server.start(host, port)
    print(url, flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    fields: dict[str, Any] = {
        "delivery_delay_ms_min": args.delay_min_ms,
        "delivery_delay_ms_max": args.delay_max_ms,
        "error_rate": args.error_rate,
        "latency_ms": args.latency_ms,
        "seed": args.seed,
    }
    if args.outcome_mix is not None:
        fields["outcome_mix"] = args.outcome_mix
    try:
        config = SimulatedProviderConfig.model_validate(fields)
    except ValidationError as exc:
        print(f"invalid configuration: {_validation_message(exc)}", file=sys.stderr)
        return 2
    if args.access_log:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    asyncio.run(_serve(config, args.host, args.port, args.access_log))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
