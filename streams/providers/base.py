"""The provider status-API protocol (k-msg ``getDeliveryStatus``), asynchronous.

A provider answers a :class:`StatusQuery` with a ``ProviderStatus`` (it knows the status),
``None`` (no result yet / not found yet), or raises :class:`ProviderError` (retryable or not).
A provider without a status API sets ``supports_status = False``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from math import isfinite
from typing import Any, Protocol, runtime_checkable

import aiohttp
import yarl
from pydantic import TypeAdapter, ValidationError

from deliverytrack.models.common import UtcDatetime
from deliverytrack.models.enums import MessageType
from deliverytrack.models.events import PollRequested, ProviderReportReceived, ProviderStatus

# k-msg KMsgErrorCode retryability (packages/core/src/errors.ts, classifyForRetry defaults).
RETRYABLE_CODES = frozenset(
    {
        "NETWORK_ERROR",
        "RATE_LIMIT_EXCEEDED",
        "NETWORK_TIMEOUT",
        "NETWORK_SERVICE_UNAVAILABLE",
        "PROVIDER_ERROR",
        "UNKNOWN_ERROR",
    }
)
NON_RETRYABLE_CODES = frozenset(
    {
        "INVALID_REQUEST",
        "AUTHENTICATION_FAILED",
        "INSUFFICIENT_BALANCE",
        "TEMPLATE_NOT_FOUND",
        "MESSAGE_SEND_FAILED",
        "REQUEST_ABORTED",
        "CRYPTO_CONFIG_ERROR",
        "CRYPTO_ENCRYPT_FAILED",
        "CRYPTO_DECRYPT_FAILED",
        "CRYPTO_HASH_FAILED",
        "CRYPTO_POLICY_VIOLATION",
    }
)


MAX_REPORTS_PER_REQUEST = 1_000
"""A webhook request with more reports than this is refused (400), whatever its format."""
MAX_EVENT_ID_CHARS = 512
"""The longest ``eventId`` an event may have (the models' id length limit)."""


def bounded_event_id(event_id: str) -> str:
    """An eventId derived from a provider's payload, cut to ``MAX_EVENT_ID_CHARS``: a longer
    one keeps its first part and ends with the SHA-256 of the whole, so the same report still
    gets the same id (a provider's retry stays a duplicate)."""
    if len(event_id) <= MAX_EVENT_ID_CHARS:
        return event_id
    digest = hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{event_id[: MAX_EVENT_ID_CHARS - len(digest) - 1]}~{digest}"


_UTC_DATETIME: TypeAdapter[datetime] = TypeAdapter(UtcDatetime)


def storable_time(moment: datetime) -> datetime | None:
    """``moment`` in UTC if an event can hold it, else ``None``: a provider's date that is out
    of range (before 1970, or past the models' upper bound, or overflowing once converted to
    UTC, e.g. ``9999-12-31T23:59:59-01:00``) is treated like an unparsable one, as k-msg's
    ``parseDate`` does, rather than refusing the whole report. The report keeps it in ``raw``."""
    try:
        return _UTC_DATETIME.validate_python(moment)
    except (ValidationError, OverflowError):
        return None


def _finite_or_none(text: str) -> float | None:
    value = float(text)
    return value if isfinite(value) else None


def loads_provider_json(text: str | bytes) -> Any:
    """A provider's JSON body, read the way its own platform's parser would take it: ``NaN``,
    ``Infinity`` and numbers beyond float range become null. Our models keep only finite
    numbers, and one odd number in a provider's answer must not turn every poll of a message
    into an error. Nesting deeper than Python's recursion limit (~1,000 levels) is a
    ``ValueError`` like any other malformed JSON."""
    try:
        return json.loads(text, parse_constant=lambda _: None, parse_float=_finite_or_none)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def shown_url(url: str) -> str:
    """``url`` as error messages quote it: without a user and password (a base URL may carry a
    gateway's credentials, and a message is published on observations and kept on records)."""
    try:
        return str(yarl.URL(url).with_user(None))
    except ValueError:
        return "<an invalid URL>"


MAX_ANSWER_BYTES = 262_144
"""The most of a provider's answer that is read (after decompression): a longer 2xx answer is
a retryable ``PROVIDER_ERROR``; of an error answer (4xx, 5xx) the start is kept, and the error
is classified by its status as usual. A status answer is a few KiB; read whole, a huge or
compressed one (a few KiB of gzip inflate to GiB) would fill the worker's memory."""
MAX_ERROR_MESSAGE_CHARS = 1_000
"""The longest provider error message an observation keeps (the poller cuts longer ones: an
error answer's text could otherwise make the record too large to keep the observation)."""


async def read_answer(method: str, url: str, response: aiohttp.ClientResponse) -> tuple[int, str]:
    """(HTTP status, text) of a provider's answer, at most ``MAX_ANSWER_BYTES`` of it, decoded
    by its charset (UTF-8 by default, undecodable bytes replaced). Requests are made with
    ``allow_redirects=False``: a status API that answers 3xx is a retryable ``PROVIDER_ERROR``
    and the redirect is not followed (it would take our request, and IWINV's ``AUTH``/``secret``
    headers, which aiohttp does not drop for another host, anywhere the answer points)."""
    status = response.status
    if 300 <= status < 400:
        raise ProviderError(
            "PROVIDER_ERROR",
            f"{method} {url}: HTTP {status} (redirects are not followed)",
            http_status=status,
        )
    body = bytearray()
    while len(body) <= MAX_ANSWER_BYTES:
        chunk = await response.content.read(MAX_ANSWER_BYTES + 1 - len(body))
        if not chunk:
            break
        body += chunk
    if len(body) > MAX_ANSWER_BYTES and 200 <= status < 300:
        raise ProviderError(
            "PROVIDER_ERROR",
            f"{method} {url}: HTTP {status}, an answer larger than {MAX_ANSWER_BYTES:,} bytes",
            http_status=status,
        )
    del body[MAX_ANSWER_BYTES:]
    try:
        return status, body.decode(response.charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return status, body.decode("utf-8", errors="replace")


def is_retryable(code: str, http_status: int | None = None) -> bool:
    """k-msg's order: known codes first, then the HTTP status (>=500, 408, 425, 429)."""
    if code in RETRYABLE_CODES:
        return True
    if code in NON_RETRYABLE_CODES:
        return False
    if http_status is not None:
        return http_status >= 500 or http_status in (408, 425, 429)
    return False


def code_for_http_status(http_status: int) -> str:
    """A KMsgErrorCode for a bare HTTP failure. Unlike k-msg's IWINV mapping, a gateway
    502/503/504 is a retryable service-unavailable, not a permanent INVALID_REQUEST."""
    if http_status in (401, 403):
        return "AUTHENTICATION_FAILED"
    if http_status == 429:
        return "RATE_LIMIT_EXCEEDED"
    if http_status in (502, 503, 504):
        return "NETWORK_SERVICE_UNAVAILABLE"
    if http_status == 408:
        return "NETWORK_TIMEOUT"
    if http_status >= 500:
        return "PROVIDER_ERROR"
    return "INVALID_REQUEST"


class ProviderError(Exception):
    """A failed status lookup. ``retryable`` decides between backoff and UNKNOWN."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status
        self.retryable = is_retryable(code, http_status) if retryable is None else retryable


@dataclass(frozen=True, slots=True)
class StatusQuery:
    """k-msg ``DeliveryStatusQuery``."""

    provider_message_id: str
    type: MessageType
    to: str
    requested_at: datetime
    scheduled_at: datetime | None = None

    @classmethod
    def from_request(cls, request: PollRequested) -> StatusQuery:
        return cls(
            provider_message_id=request.provider_message_id,
            type=request.type,
            to=request.to,
            requested_at=request.requested_at,
            scheduled_at=request.scheduled_at,
        )


@runtime_checkable
class StatusProvider(Protocol):
    """What the poller needs from a provider adapter."""

    provider_id: str
    supports_status: bool

    async def get_delivery_status(self, query: StatusQuery) -> ProviderStatus | None:
        """The provider's answer, ``None`` for "no result yet"; raises ProviderError."""
        ...

    async def close(self) -> None: ...


class WebhookRejected(Exception):
    """A webhook request we refuse: ``status`` 401 (unsigned, forged, stale) or 400 (malformed).

    Nothing is published for a rejected request; ``reason`` goes back to the caller.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


@runtime_checkable
class WebhookAdapter(Protocol):
    """Turns one provider's delivery-report request into normalised reports.

    ``verify`` runs first and raises ``WebhookRejected(401, ...)``; ``parse`` raises
    ``WebhookRejected(400, ...)``. ``parse`` returns one ``ProviderReportReceived`` per report in
    the request (a provider may batch), each with a deterministic ``eventId`` built from the
    provider's own payload, so a provider's retry of the same report is a duplicate, not a new
    event. ``received_at`` is the ingress clock and becomes ``receivedAt``.
    """

    provider_id: str

    def verify(self, headers: Mapping[str, str], body: bytes, now: datetime) -> None: ...

    def parse(
        self, headers: Mapping[str, str], body: bytes, received_at: datetime
    ) -> list[ProviderReportReceived]: ...
