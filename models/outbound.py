"""Outbound webhooks (k-msg's @k-msg/webhook, done the event-sourced way): endpoints, the
payload a receiver gets, and the delivery events on Kafka.

An endpoint arrives from settings and inside send results (``webhooks``), i.e. from any
producer: everything the dispatcher will do with it is checked here, where it is decoded, so a
bad endpoint refuses its send result (a dead letter) instead of failing the dispatcher later.
The URL must parse as aiohttp parses it, with a host that encodes to IDNA; header names are
HTTP tokens and values visible ASCII (no CR, LF, NUL or other control character), a bounded
number of them; delays are bounded so the next attempt's time is always representable.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

import yarl
from pydantic import AfterValidator, Field, JsonValue, model_validator

from deliverytrack.models.common import (
    MAX_JSON_DEPTH,
    DerivedId,
    Frozen,
    NonEmptyStr,
    Tolerant,
    UtcDatetime,
    checked_json,
)

MESSAGE_EVENT_TYPES: tuple[str, ...] = (
    "message.queued",
    "message.pending",
    "message.sending",
    "message.sent",
    "message.delivered",
    "message.clicked",
    "message.failed",
    "message.cancelled",
    "message.unknown",
)

MAX_RETRY_DELAY_MS = 86_400_000
"""The longest wait before a retry (1 day): both ``retryDelayMs`` and every computed delay
(``retryDelayMs * backoffMultiplier^n``) are capped here."""
MAX_URL_CHARS = 2_048
MAX_HEADERS = 32
MAX_HEADER_NAME_CHARS = 256
MAX_HEADER_VALUE_CHARS = 4_096
MAX_EVENTS = 32
MAX_ATTEMPT = 100
MAX_PAYLOAD_DEPTH = MAX_JSON_DEPTH + 16
"""A payload wraps a status change, which wraps a record, which holds free-form JSON (metadata,
details) up to ``MAX_JSON_DEPTH`` deep a few levels down."""

# RFC 9110 5.6.2: token = 1*tchar
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Visible ASCII, space and tab: no CR, LF, NUL or any other control character (RFC 9110 5.5,
# without obs-text).
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
_HOSTNAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")
# Headers that frame or route the request (hop-by-hop ones included), or that describe the
# body the dispatcher signs: a header set may not set them, nor any X-DeliveryTrack-* header.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "upgrade",
        "te",
        "trailer",
        "trailers",
        "expect",
    }
)
OWN_HEADER_PREFIX = "x-deliverytrack-"


def _check_url(url: str) -> str:
    if _URL_FORBIDDEN.search(url):
        raise ValueError("must not contain whitespace or control characters")
    try:
        parsed = yarl.URL(url)
    except (ValueError, TypeError) as exc:  # UnicodeError is a ValueError
        raise ValueError(f"is not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https") or not parsed.absolute:
        raise ValueError("must be an absolute http:// or https:// URL")
    host = parsed.raw_host
    if not host:
        raise ValueError("must have a host")
    try:
        parsed.host  # noqa: B018 - decodes the punycode labels (aiohttp reads it)
    except ValueError as exc:
        raise ValueError(f"host {host!r} is not valid IDNA ({exc})") from None
    if not _is_ip_address(host):
        try:
            ascii_host = host.encode("idna").decode("ascii")
        except (UnicodeError, ValueError) as exc:
            raise ValueError(f"host {host!r} cannot be encoded as IDNA ({exc})") from None
        if len(ascii_host) > 253 or not _HOSTNAME.fullmatch(ascii_host):
            raise ValueError(f"host {host!r} is not a valid host name")
    return url


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalise_host(host: str) -> str:
    """A host as host rules compare it: an IP address in its canonical form, or a name in lower
    case ASCII (IDNA), without brackets or a trailing dot. ``ValueError`` if it is neither."""
    host = host.strip().removeprefix("[").removesuffix("]").rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except (UnicodeError, ValueError) as exc:
        raise ValueError(f"{host[:80]!r} is not a valid host name ({exc})") from None
    if not ascii_host or len(ascii_host) > 253 or not _HOSTNAME.fullmatch(ascii_host):
        raise ValueError(f"{host[:80]!r} is not a valid host name")
    return ascii_host


def host_pattern(entry: str) -> str:
    """A host rule: a host name or an IP address (matched exactly), or ``*.example.com`` (any
    name below example.com, not example.com itself); normalised."""
    entry = entry.strip()
    if entry.startswith("*."):
        return "*." + normalise_host(entry[2:])
    return normalise_host(entry)


def allowed_host(entry: str) -> IpNetwork | str:
    """An entry of ``DELIVERYTRACK_WEBHOOK_ALLOWED_HOSTS``: a CIDR or an address (a network),
    else a host rule (:func:`host_pattern`). ``ValueError`` if it is none of them."""
    text = entry.strip()
    if "/" in text or _is_ip_address(text.removeprefix("[").removesuffix("]")):
        try:
            return ipaddress.ip_network(text.removeprefix("[").removesuffix("]"), strict=False)
        except ValueError as exc:
            raise ValueError(f"{text[:80]!r} is not a valid CIDR ({exc})") from None
    return host_pattern(text)


def check_header_set(headers: dict[str, str]) -> dict[str, str]:
    """The rules of a header set (``DELIVERYTRACK_WEBHOOK_HEADERS``): HTTP token names, visible
    ASCII values, bounded, none the dispatcher sets itself. Errors never quote a value."""
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"at most {MAX_HEADERS} headers")
    for name, value in headers.items():
        if len(name) > MAX_HEADER_NAME_CHARS or not _TOKEN.fullmatch(name):
            raise ValueError(f"header name {name[:80]!r} is not an HTTP token")
        lowered = name.lower()
        if lowered in RESERVED_HEADERS or lowered.startswith(OWN_HEADER_PREFIX):
            raise ValueError(f"header {name!r} is set by the dispatcher, not by a header set")
        if len(value) > MAX_HEADER_VALUE_CHARS:
            raise ValueError(f"header {name!r}: at most {MAX_HEADER_VALUE_CHARS} characters")
        if not _HEADER_VALUE.fullmatch(value):
            raise ValueError(
                f"header {name!r}: only visible ASCII, space and tab (no CR, LF, NUL or other "
                "control characters)"
            )
    return headers


_check_payload = checked_json(MAX_PAYLOAD_DEPTH)
"""Finite numbers only, nesting bounded (see ``MAX_PAYLOAD_DEPTH``)."""


Payload = Annotated[dict[str, JsonValue], AfterValidator(_check_payload)]
DeliveryId = Annotated[str, Field(min_length=1, max_length=4_096)]
"""``<eventId of the status change>:<endpoint id>``: a derived id (up to 2,048) and an endpoint
id (up to 128)."""
EndpointId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]


class WebhookEndpoint(Tolerant):
    """Where to POST status changes. ``secretRef`` names the endpoint's secrets, configured by
    the operator: its signing secret (``DELIVERYTRACK_WEBHOOK_SECRETS``) and its header set
    (``DELIVERYTRACK_WEBHOOK_HEADERS``, e.g. ``Authorization``). Secrets never travel on topics
    or in records: an endpoint's literal ``headers`` (an older shape) are dropped where it is
    decoded, and ``headersDropped`` says so; the dispatcher refuses such an endpoint, with the
    reason, instead of calling it without the headers its receiver expects."""

    id: EndpointId
    url: Annotated[str, AfterValidator(_check_url)] = Field(
        min_length=1, max_length=MAX_URL_CHARS, pattern=r"^https?://"
    )
    events: tuple[Annotated[str, Field(min_length=1, max_length=64)], ...] = Field(
        default=("*",),
        max_length=MAX_EVENTS,
        description="event types (message.delivered, ...) or '*' for all",
    )
    secret_ref: str | None = Field(
        default=None, min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$"
    )
    headers_dropped: bool | None = Field(
        default=None,
        description="The endpoint came with literal headers, which are not kept (secrets): "
        "put them in DELIVERYTRACK_WEBHOOK_HEADERS under its secretRef",
    )
    timeout_ms: int = Field(default=5_000, ge=1, le=60_000)
    max_retries: int = Field(default=3, ge=0, le=10)
    retry_delay_ms: int = Field(default=1_000, ge=1, le=MAX_RETRY_DELAY_MS)
    backoff_multiplier: float = Field(default=2.0, ge=1, le=5, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _drop_literal_headers(cls, value: Any) -> Any:
        # Literal headers are secrets (Authorization, API keys): never kept in a record, a
        # status change, the retry topic or a dead letter, whatever they hold.
        if isinstance(value, dict) and "headers" in value:
            value = dict(value)
            if value.pop("headers"):
                value.pop("headers_dropped", None)
                value["headersDropped"] = True
        return value

    def wants(self, event_type: str) -> bool:
        return "*" in self.events or event_type in self.events

    def delay_ms(self, retry: int) -> int:
        """k-msg: the delay before retry n (n >= 1) is base * multiplier^n, here capped at
        ``MAX_RETRY_DELAY_MS``."""
        if retry < 0:
            raise ValueError("retry must be >= 0")
        delay = float(self.retry_delay_ms)
        for _ in range(retry):  # stops growing once capped: no float overflow, whatever n
            delay *= self.backoff_multiplier
            if delay >= MAX_RETRY_DELAY_MS:
                return MAX_RETRY_DELAY_MS
        return min(int(delay), MAX_RETRY_DELAY_MS)


class WebhookDelivery(Frozen):
    """One endpoint's delivery of one event, and the attempt it is at (retry topic value)."""

    delivery_id: DeliveryId
    endpoint: WebhookEndpoint
    event_id: DerivedId
    event_type: NonEmptyStr
    message_id: NonEmptyStr
    payload: Payload
    attempt: int = Field(ge=1, le=MAX_ATTEMPT)
    not_before: UtcDatetime


class WebhookAttempted(Frozen):
    """The outcome of one attempt (``deliverytrack.webhook-deliveries``)."""

    schema_version: Literal[1] = 1
    event_type: Literal["WebhookAttempted"] = "WebhookAttempted"
    delivery_id: DeliveryId
    endpoint_id: NonEmptyStr
    event_id: DerivedId
    message_id: NonEmptyStr
    attempt: int
    outcome: Literal["delivered", "failed", "exhausted", "refused"]
    http_status: int | None = None
    error: str | None = None
    latency_ms: int
    attempted_at: UtcDatetime
    next_attempt_at: UtcDatetime | None = None
