"""Webhook ingress: ``POST /webhooks/{providerId}`` -> verified, normalised reports on Kafka.

A request is verified first (401 and nothing published when unsigned, forged or stale), then
parsed (400 with the reason when malformed; 413 when a report would be larger than an input the
worker accepts), then every report in it is published to ``provider-webhooks`` keyed
``providerId:providerMessageId``; the answer is 200 only after Kafka acknowledged all of them,
so a provider that retries on anything else never loses a report. If Kafka does not acknowledge
within ``ack_timeout_s`` (or refuses), the answer is 503 and the provider retries: nothing
waits longer than that deadline. Duplicates (a provider's retry, or the part of a timed-out
request that did reach Kafka) are dropped downstream by their deterministic ``eventId``.

Every error raised while verifying or parsing a request (whatever the adapter) is the
request's fault and answered 4xx with the reason, never 500: see :meth:`WebhookIngress.accept`.

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
from pydantic import Field, ValidationError, field_validator

from deliverytrack.models.common import Frozen, JsonObject, NonEmptyStr, UtcDatetime
from deliverytrack.models.enums import TrackingStatus
from deliverytrack.models.events import ProviderReportReceived, provider_key
from deliverytrack.models.policy import PiiPolicy, WebhookRawMode
from deliverytrack.models.settings import Settings
from deliverytrack.streams.http.errors import INPUT_ERRORS, describe_input_error
from deliverytrack.streams.providers.base import (
    MAX_EVENT_ID_CHARS,
    MAX_REPORTS_PER_REQUEST,
    WebhookAdapter,
    WebhookRejected,
)
from deliverytrack.streams.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from deliverytrack.tables.pii import mask_phone_numbers, mask_phone_text, protect_report

log = logging.getLogger(__name__)

WEBHOOK_ACK_TIMEOUT_S = 10.0
"""How long the ingress waits for Kafka to acknowledge a request's reports before it answers
503 (``Settings.webhook_ack_timeout_ms`` where that setting exists)."""
MAX_REPORT_BYTES = 1_048_576
"""The largest encoded report the ingress publishes (``Settings.max_input_bytes`` where that
setting exists): a larger one would be refused by the worker as an input, so it is 413 here."""


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

    @field_validator("provider_message_id", mode="before")
    @classmethod
    def _trimmed(cls, value: object) -> object:
        """Trimmed, as the fold trims a send result's providerMessageId (k-msg): a padded id
        must reach the record it names; a blank one is refused."""
        return value.strip() if isinstance(value, str) else value


class GenericWebhookAdapter:
    """Signed JSON reports: ``X-DeliveryTrack-Timestamp: <unix seconds>`` and
    ``X-DeliveryTrack-Signature: v1=<hex>`` (several comma-separated values allowed while a
    secret is rotated). Body: one report object, a JSON array of them, or
    ``{"reports": [...]}``."""

    def __init__(
        self,
        provider_id: str,
        secrets: list[str],
        replay_window_ms: int,
        pii: PiiPolicy | None = None,
    ) -> None:
        if not secrets:
            raise ValueError(f"provider {provider_id!r}: the generic webhook needs a secret")
        self.provider_id = provider_id
        self._secrets = secrets
        self._window_s = replay_window_ms / 1000
        self._pii = pii or PiiPolicy()

    def verify(self, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        stamp = headers.get(TIMESTAMP_HEADER)
        given = headers.get(SIGNATURE_HEADER)
        if not stamp or not given:
            raise WebhookRejected(
                401, f"unsigned: {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} needed"
            )
        stamp = stamp.strip()
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
            raise WebhookRejected(401, f"{TIMESTAMP_HEADER} must be unix seconds")
        timestamp = int(stamp)
        # Integer arithmetic: no header value can overflow a float here.
        if abs(int(now.timestamp()) - timestamp) > self._window_s:
            raise WebhookRejected(
                401, f"stale: timestamp {timestamp} is outside the {self._window_s:g}s window"
            )
        # Compared as bytes: a header may hold any (undecodable) octets, and compare_digest
        # refuses non-ASCII str.
        offered = [
            part.strip().encode("utf-8", "surrogateescape")
            for part in given.split(",")
            if part.strip()
        ]
        for secret in self._secrets:
            expected = sign(secret, timestamp, body).encode()
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
                reports.append(self._normalise(report, item, received_at))
            except ValidationError as exc:
                raise WebhookRejected(400, f"reports[{index}]: {_errors(exc)}") from None
        return reports

    def _normalise(
        self, report: GenericReport, item: dict[str, Any], received_at: datetime
    ) -> ProviderReportReceived:
        if report.event_id is not None:
            event_id = f"{self.provider_id}:{report.event_id}"
            if len(event_id) > MAX_EVENT_ID_CHARS:
                room = MAX_EVENT_ID_CHARS - len(self.provider_id) - 1
                raise WebhookRejected(
                    400, f"eventId: at most {room} characters, got {len(report.event_id)}"
                )
        else:
            event_id = _derived_event_id(self.provider_id, item, self._pii)
        return ProviderReportReceived(
            event_id=event_id,
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


def _derived_event_id(provider_id: str, item: Mapping[str, Any], pii: PiiPolicy) -> str:
    """Same report, same id: ``<providerId>:<providerMessageId>:<status>:<digest>``, the digest
    of its canonical JSON (sorted keys); ``<providerId>:sha256:<digest>`` when that would be
    longer than an eventId may be (a long providerMessageId).

    With personal data protected, the digest is of the report with its phone numbers masked:
    a digest of the plain report would give the number away to anyone who reads the masked
    one (it leaves six digits to guess). Two reports that differ only in a number's hidden
    digits then share an id, and the second is dropped as a duplicate."""
    if pii.protects_plain:
        item = mask_phone_numbers(item)
    digest = hashlib.sha256(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).hexdigest()
    event_id = f"{provider_id}:{item.get('providerMessageId')}:{item.get('status')}:{digest[:24]}"
    return event_id if len(event_id) <= MAX_EVENT_ID_CHARS else f"{provider_id}:sha256:{digest}"


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
        rotation = config.webhook_secret.get_secret_value().split(",")
        secrets = [part.strip() for part in rotation if part.strip()]
        adapters[provider_id] = GenericWebhookAdapter(
            provider_id, secrets, settings.webhook_replay_window_ms, settings.pii
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
        *,
        raw_mode: WebhookRawMode = "masked",
        ack_timeout_s: float = WEBHOOK_ACK_TIMEOUT_S,
        max_report_bytes: int = MAX_REPORT_BYTES,
    ) -> None:
        self.adapters = adapters
        self.pii = pii or PiiPolicy()
        self.raw_mode = raw_mode
        self._publish = publish  # async (topic, key, value) -> awaitable of the ack
        self.topic = topic
        self.ack_timeout_s = ack_timeout_s
        self.max_report_bytes = max_report_bytes
        self.accepted = 0
        self.rejected = 0
        self.unacknowledged = 0

    def accept(
        self, adapter: WebhookAdapter, headers: Mapping[str, str], body: bytes, now: datetime
    ) -> list[tuple[bytes, bytes, str]]:
        """Verify and parse one request into ``(key, value, eventId)`` of each report, or raise
        ``WebhookRejected``. The input boundary of the ingress: whatever an adapter raises
        while verifying (401) or parsing (400), and any report that cannot be encoded (400) or
        is larger than the worker accepts (413), refuses the request with the reason."""
        try:
            adapter.verify(headers, body, now)
        except WebhookRejected:
            raise
        except INPUT_ERRORS as exc:
            raise WebhookRejected(
                401, f"cannot verify the request: {describe_input_error(exc)}"
            ) from exc
        try:
            reports = adapter.parse(headers, body, now)
            if not reports:
                raise WebhookRejected(400, "no reports in the request")
            if len(reports) > MAX_REPORTS_PER_REQUEST:
                raise WebhookRejected(400, f"at most {MAX_REPORTS_PER_REQUEST} reports per request")
            # Before anything is published: phone numbers masked wherever they sit in raw,
            # statusMessage and statusCode (or raw dropped), as DELIVERYTRACK_WEBHOOK_RAW says.
            reports = [protect_report(r, self.pii, self.raw_mode) for r in reports]
            encoded = []
            for index, r in enumerate(reports):
                value = r.model_dump_json(by_alias=True, exclude_none=True).encode()
                if len(value) > self.max_report_bytes:
                    raise WebhookRejected(
                        413,
                        f"report {index} is {len(value)} bytes as an event; at most "
                        f"{self.max_report_bytes}",
                    )
                key = provider_key(r.provider_id, r.provider_message_id).encode()
                encoded.append((key, value, r.event_id))
        except WebhookRejected:
            raise
        except INPUT_ERRORS as exc:
            raise WebhookRejected(400, f"malformed request: {describe_input_error(exc)}") from exc
        return encoded

    async def handle(
        self, provider_id: str, headers: Mapping[str, str], body: bytes, now: datetime | None = None
    ) -> tuple[int, dict[str, Any]]:
        adapter = self.adapters.get(provider_id)
        if adapter is None:
            self.rejected += 1
            return 404, {"error": f"no webhook is configured for provider {provider_id!r}"}
        try:
            reports = self.accept(adapter, headers, body, now or datetime.now(UTC))
        except WebhookRejected as exc:
            self.rejected += 1
            # The reason may quote the request (a validation error): no plain number in logs.
            reason = mask_phone_text(exc.reason) if self.pii.protects_plain else exc.reason
            log.info("webhook %s refused (%s): %s", provider_id, exc.status, reason)
            return exc.status, {"error": exc.reason}
        try:
            async with asyncio.timeout(self.ack_timeout_s):
                # Cancelling an ack on timeout does not withdraw its report: one that reaches
                # Kafka anyway is a duplicate of the provider's retry, dropped by its eventId.
                acks = [await self._publish(self.topic, key, value) for key, value, _ in reports]
                await asyncio.gather(*acks)
        except TimeoutError:
            self.unacknowledged += 1
            log.warning(
                "webhook %s: Kafka did not acknowledge %d report(s) within %gs",
                provider_id,
                len(reports),
                self.ack_timeout_s,
            )
            return 503, {
                "error": f"Kafka did not acknowledge the reports within {self.ack_timeout_s:g}s; "
                "retry later"
            }
        except (KafkaError, RuntimeError) as exc:
            log.warning("webhook %s: publishing failed: %s", provider_id, exc)
            return 503, {"error": f"could not publish to Kafka, retry later: {exc}"}
        self.accepted += len(reports)
        return 200, {"accepted": len(reports), "eventIds": [event_id for _, _, event_id in reports]}
