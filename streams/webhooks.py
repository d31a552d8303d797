"""Webhook ingress: ``POST /webhooks/{providerId}`` -> verified, normalised reports on Kafka.

A request is verified first (401 and nothing published when unsigned, forged or stale), then
parsed (400 with the reason when malformed), then every report in it is published to
``provider-webhooks`` keyed ``providerId:providerMessageId``; the answer is 200 only after Kafka
acknowledged all of them, so a provider that retries on anything else never loses a report.
Duplicates (a provider's retry) are dropped downstream by their deterministic ``eventId``.

The generic format (any provider, no code): see ``GenericWebhookAdapter`` and the README.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka.errors import KafkaError
from pydantic import Field, ValidationError

from deliverytrack.models.common import Frozen, JsonObject, NonEmptyStr, UtcDatetime
from deliverytrack.models.enums import TrackingStatus
from deliverytrack.models.events import ProviderReportReceived, provider_key
from deliverytrack.models.policy import PiiPolicy
from deliverytrack.models.settings import Settings
from deliverytrack.streams.providers.base import WebhookAdapter, WebhookRejected
from deliverytrack.tables.pii import redact_raw

log = logging.getLogger(__name__)

TIMESTAMP_HEADER = "X-DeliveryTrack-Timestamp"
SIGNATURE_HEADER = "X-DeliveryTrack-Signature"
MAX_REPORTS_PER_REQUEST = 1_000


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The generic signature header value: ``v1=`` + hex HMAC-SHA256 over
    ``"<timestamp>." + body`` with the provider's webhook secret."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


class GenericReport(Frozen):
    """One report in the generic webhook format (camelCase JSON)."""

    provider_message_id: NonEmptyStr
    status: TrackingStatus
    status_code: str | None = None
    status_message: str | None = None
    sent_at: UtcDatetime | None = None
    delivered_at: UtcDatetime | None = None
    failed_at: UtcDatetime | None = None
    event_id: str | None = Field(
        default=None,
        min_length=1,
        description="The provider's own unique id of this report; derived from it if absent",
    )
    raw: JsonObject | None = None


class GenericWebhookAdapter:
    """Signed JSON reports: ``X-DeliveryTrack-Timestamp: <unix seconds>`` and
    ``X-DeliveryTrack-Signature: v1=<hex>`` (several comma-separated values allowed while a
    secret is rotated). Body: one report object, a JSON array of them, or
    ``{"reports": [...]}``."""

    def __init__(self, provider_id: str, secrets: list[str], replay_window_ms: int) -> None:
        if not secrets:
            raise ValueError(f"provider {provider_id!r}: the generic webhook needs a secret")
        self.provider_id = provider_id
        self._secrets = secrets
        self._window_s = replay_window_ms / 1000

    def verify(self, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        stamp = headers.get(TIMESTAMP_HEADER)
        given = headers.get(SIGNATURE_HEADER)
        if not stamp or not given:
            raise WebhookRejected(
                401, f"unsigned: {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} needed"
            )
        try:
            timestamp = int(stamp)
        except ValueError:
            raise WebhookRejected(401, f"{TIMESTAMP_HEADER} must be unix seconds") from None
        if abs(now.timestamp() - timestamp) > self._window_s:
            raise WebhookRejected(
                401, f"stale: timestamp {timestamp} is outside the {self._window_s:g}s window"
            )
        offered = [part.strip() for part in given.split(",") if part.strip()]
        for secret in self._secrets:
            expected = sign(secret, timestamp, body)
            if any(hmac.compare_digest(expected, candidate) for candidate in offered):
                return
        raise WebhookRejected(401, "forged: the signature does not match")

    def parse(
        self, headers: Mapping[str, str], body: bytes, received_at: datetime
    ) -> list[ProviderReportReceived]:
        try:
            payload: Any = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise WebhookRejected(400, f"malformed JSON: {exc}") from None
        if isinstance(payload, dict) and "reports" in payload:
            payload = payload["reports"]
        items = payload if isinstance(payload, list) else [payload]
        if not items:
            raise WebhookRejected(400, "no reports in the request")
        if len(items) > MAX_REPORTS_PER_REQUEST:
            raise WebhookRejected(400, f"at most {MAX_REPORTS_PER_REQUEST} reports per request")
        reports = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise WebhookRejected(400, f"reports[{index}]: expected a JSON object")
            try:
                report = GenericReport.model_validate(item)
            except ValidationError as exc:
                raise WebhookRejected(400, f"reports[{index}]: {_errors(exc)}") from None
            reports.append(self._normalise(report, item, received_at))
        return reports

    def _normalise(
        self, report: GenericReport, item: dict[str, Any], received_at: datetime
    ) -> ProviderReportReceived:
        event_id = report.event_id or _derived_event_id(self.provider_id, item)
        return ProviderReportReceived(
            event_id=f"{self.provider_id}:{event_id}",
            provider_id=self.provider_id,
            provider_message_id=report.provider_message_id,
            status=report.status,
            status_code=report.status_code,
            status_message=report.status_message,
            sent_at=report.sent_at,
            delivered_at=report.delivered_at,
            failed_at=report.failed_at,
            received_at=received_at,
            raw=report.raw if report.raw is not None else item,
        )


def _derived_event_id(provider_id: str, item: Mapping[str, Any]) -> str:
    """Same report, same id: a digest of its canonical JSON (sorted keys)."""
    digest = hashlib.sha256(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{item.get('providerMessageId')}:{item.get('status')}:{digest[:24]}"


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
        for err in exc.errors(include_url=False)[:5]
    )


def build_webhook_adapters(settings: Settings) -> dict[str, WebhookAdapter]:
    """Adapters by providerId: SOLAPI and IWINV parse their own formats; every other
    provider with a ``webhookSecret`` takes the generic signed format."""
    from deliverytrack.streams.providers import registry

    adapters: dict[str, WebhookAdapter] = {}
    for provider_id, config in settings.providers.items():
        if config.kind in ("solapi", "iwinv") or config.webhook_secret is None:
            continue
        secrets = [s for s in config.webhook_secret.get_secret_value().split(",") if s]
        adapters[provider_id] = GenericWebhookAdapter(
            provider_id, secrets, settings.webhook_replay_window_ms
        )
    native = getattr(registry, "build_webhook_adapters", None)
    if native is not None:
        adapters.update(native(settings))
    return adapters


class WebhookIngress:
    """Verify, parse and publish one request; the HTTP view is a thin wrapper."""

    def __init__(
        self,
        adapters: Mapping[str, WebhookAdapter],
        publish: Any,
        topic: str,
        pii: PiiPolicy | None = None,
    ) -> None:
        self.adapters = adapters
        self.pii = pii or PiiPolicy()
        self._publish = publish  # async (topic, key, value) -> awaitable of the ack
        self.topic = topic
        self.accepted = 0
        self.rejected = 0

    async def handle(
        self, provider_id: str, headers: Mapping[str, str], body: bytes, now: datetime | None = None
    ) -> tuple[int, dict[str, Any]]:
        adapter = self.adapters.get(provider_id)
        if adapter is None:
            self.rejected += 1
            return 404, {"error": f"no webhook is configured for provider {provider_id!r}"}
        now = now or datetime.now(UTC)
        try:
            adapter.verify(headers, body, now)
            reports = adapter.parse(headers, body, now)
        except WebhookRejected as exc:
            self.rejected += 1
            log.info("webhook %s refused (%s): %s", provider_id, exc.status, exc.reason)
            return exc.status, {"error": exc.reason}
        if self.pii.protects_plain:
            # Phone numbers under phone-ish keys of the provider's payload are masked before
            # the report is published (the fold masks the record's own numbers again).
            reports = [
                r.model_copy(update={"raw": redact_raw(r.raw, self.pii)}) if r.raw else r
                for r in reports
            ]
        try:
            acks = [
                await self._publish(
                    self.topic,
                    provider_key(r.provider_id, r.provider_message_id).encode(),
                    r.model_dump_json(by_alias=True, exclude_none=True).encode(),
                )
                for r in reports
            ]
            await asyncio.gather(*acks)
        except (KafkaError, RuntimeError) as exc:
            log.warning("webhook %s: publishing failed: %s", provider_id, exc)
            return 503, {"error": f"could not publish to Kafka, retry later: {exc}"}
        self.accepted += len(reports)
        return 200, {"accepted": len(reports), "eventIds": [r.event_id for r in reports]}
