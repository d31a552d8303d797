"""SOLAPI: the delivery-status client (k-msg ``solapi.delivery.ts``) and the webhook adapter.

Status API
    ``GET {baseUrl}/messages/v4/list?messageId=<id>&limit=1`` (what SOLAPI's SDK calls for
    ``getMessages``), signed with ``Authorization: HMAC-SHA256 apiKey=<key>, date=<ISO-8601>,
    salt=<random>, signature=<hex HMAC-SHA256(apiSecret, date + salt)>``. The answer's
    ``messageList`` is an object keyed by message id; an empty one means "no result yet".

Status codes (``map_solapi_status_code``)

    ======================================  ==========
    ``statusCode``                          status
    ======================================  ==========
    missing / empty                         UNKNOWN
    ``2000`` (accepted, waiting)            PENDING
    ``3000`` (handed to the carrier)        SENT
    ``4000`` (received by the handset)      DELIVERED
    any other ``1xxx``/``2xxx``/``3xxx``    FAILED (e.g. 3104 "not a KakaoTalk user")
    anything else                           UNKNOWN
    ======================================  ==========

Differences from k-msg, on purpose (kmsg-behaviour.md 9.1, **[quirk]** and section 15):

* k-msg's FAILED regex is double-escaped and never matches, so every real failure code becomes
  UNKNOWN. Here a ``1xxx``/``2xxx``/``3xxx`` code other than 2000/3000 is FAILED, as k-msg meant.
* k-msg sets ``deliveredAt`` from ``dateCompleted`` even for failures. Here ``dateCompleted`` is
  ``deliveredAt`` only for DELIVERED and ``failedAt`` for FAILED.
* k-msg uses ``messageList[id]`` or the first entry whose ``messageId`` matches; so do we, and a
  list holding only other messages is "no result yet". An answer without a ``messageList``
  object, or one that is not JSON, is a retryable ``PROVIDER_ERROR`` (k-msg: ``null``).
* HTTP errors are classified by status: 401/403 (SOLAPI's ``InvalidAPIKey``,
  ``SignatureDoesNotMatch``, ``RequestTimeTooSkewed``...) are non-retryable
  AUTHENTICATION_FAILED, 429 is a retryable RATE_LIMIT_EXCEEDED, 5xx retryable.

Webhook
    SOLAPI posts delivery reports as a JSON array of message objects (``messageId``,
    ``statusCode``, ``statusMessage``, ``dateProcessed``, ``dateReported``, ``dateReceived``,
    ...); a single object and ``{"messageList": ...}`` are accepted too. SOLAPI does not sign
    its webhooks, so :class:`SolapiWebhookAdapter` requires the provider's ``webhookSecret``:
    the request must carry it as ``X-Webhook-Token: <secret>`` or ``Authorization: Bearer
    <secret>``. Where SOLAPI's webhook settings take only a URL, register
    ``https://<host>/webhooks/<providerId>?token=<secret>``; the ingress must then copy the
    ``token`` query parameter into the ``X-Webhook-Token`` header before calling :meth:`verify`.
    Each report's ``eventId`` is ``<providerId>:<messageId>:<statusCode>:<dateUpdated>`` (e.g.
    ``solapi:M4V...:4000:2024-05-01T03:00:09.000Z``; the date is the first of ``dateUpdated``,
    ``dateReported``, ``dateReceived``, ``dateCompleted``, ``dateProcessed`` present, else
    ``-``), so SOLAPI's retry of the same report is a duplicate, and two SOLAPI accounts
    configured as two providers never share an id.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any, Final

import aiohttp
from pydantic import ValidationError

from deliverytrack.models.enums import TrackingStatus
from deliverytrack.models.events import ProviderReportReceived, ProviderStatus
from deliverytrack.streams.clock import utc_now
from deliverytrack.streams.providers.base import (
    MAX_REPORTS_PER_REQUEST,
    ProviderError,
    StatusQuery,
    WebhookRejected,
    bounded_event_id,
    code_for_http_status,
    loads_provider_json,
    read_answer,
    shown_url,
    storable_time,
)

SOLAPI_BASE_URL: Final = "https://api.solapi.com"
LIST_PATH: Final = "/messages/v4/list"
WEBHOOK_TOKEN_HEADER: Final = "X-Webhook-Token"  # noqa: S105 - a header name

# ASCII digits only: Python's \d also matches other scripts' digits ("3١٠٤"), and $ would
# match before a trailing newline.
_FAILURE_CODE: Final = re.compile(r"[123][0-9]{3}")
_SALT_ALPHABET: Final = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def map_solapi_status_code(status_code: str | None) -> TrackingStatus:
    """SOLAPI ``statusCode`` -> our status (the table in the module docstring)."""
    if not status_code:
        return TrackingStatus.UNKNOWN
    if status_code == "2000":
        return TrackingStatus.PENDING
    if status_code == "3000":
        return TrackingStatus.SENT
    if status_code == "4000":
        return TrackingStatus.DELIVERED
    if _FAILURE_CODE.fullmatch(status_code):
        return TrackingStatus.FAILED
    return TrackingStatus.UNKNOWN


def parse_solapi_date(value: Any) -> datetime | None:
    """An ISO-8601 date as SOLAPI writes it (``2024-05-01T03:04:05.678Z``); naive means UTC.
    Anything unparsable is ``None`` (k-msg ``parseDate``), and so is a date out of the range
    an event holds (see ``storable_time``)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return storable_time(parsed)


def solapi_date(now: datetime) -> str:
    """The ``date`` of the Authorization header: ISO-8601 UTC with milliseconds."""
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def solapi_signature(api_secret: str, date: str, salt: str) -> str:
    return hmac.new(api_secret.encode(), (date + salt).encode(), sha256).hexdigest()


def solapi_authorization(api_key: str, api_secret: str, now: datetime, salt: str) -> str:
    """``HMAC-SHA256 apiKey=..., date=..., salt=..., signature=...``."""
    date = solapi_date(now)
    signature = solapi_signature(api_secret, date, salt)
    return f"HMAC-SHA256 apiKey={api_key}, date={date}, salt={salt}, signature={signature}"


def new_salt(size: int = 32) -> str:
    return "".join(secrets.choice(_SALT_ALPHABET) for _ in range(size))


def _status_code_of(message: Mapping[str, Any]) -> str | None:
    code = message.get("statusCode")
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return str(code)
    if isinstance(code, str) and code.strip():
        return code.strip()
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _first_date(message: Mapping[str, Any], *fields: str) -> datetime | None:
    for field in fields:
        parsed = parse_solapi_date(message.get(field))
        if parsed is not None:
            return parsed
    return None


def _status_fields(message: Mapping[str, Any]) -> dict[str, Any]:
    """status, statusCode, statusMessage and the dates of one SOLAPI message object."""
    status_code = _status_code_of(message)
    status = map_solapi_status_code(status_code)
    fields: dict[str, Any] = {
        "status": status,
        "statusCode": status_code,
        "statusMessage": _text(message.get("statusMessage")) or _text(message.get("reason")),
        "sentAt": _first_date(message, "dateSent", "dateProcessed"),
    }
    if status is TrackingStatus.DELIVERED:
        fields["deliveredAt"] = _first_date(
            message, "dateCompleted", "dateReceived", "dateReported"
        )
    elif status is TrackingStatus.FAILED:
        fields["failedAt"] = _first_date(
            message, "dateCompleted", "dateReported", "dateUpdated", "dateReceived"
        )
    return fields


def _error_message(body: Any, text: str, status: int) -> tuple[str | None, str]:
    """(SOLAPI errorCode, message) of an error answer ``{"errorCode", "errorMessage"}``."""
    if isinstance(body, dict):
        code = body.get("errorCode")
        message = body.get("errorMessage")
        if isinstance(message, str) and message:
            return (code if isinstance(code, str) else None), message
    return None, text.strip()[:200] or f"HTTP {status}"


class SolapiProvider:
    """The StatusProvider for SOLAPI (``kind: "solapi"``)."""

    supports_status: bool = True

    def __init__(
        self,
        provider_id: str,
        *,
        api_key: str,
        api_secret: str,
        base_url: str = SOLAPI_BASE_URL,
        timeout_s: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if not api_key or not api_secret:
            raise ValueError(f"provider {provider_id!r}: SOLAPI needs apiKey and apiSecret")
        self.provider_id = provider_id
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._api_key = api_key
        self._api_secret = api_secret
        self._session = session
        self._owns_session = session is None
        self._clock = clock

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    def authorization(self) -> str:
        """A fresh Authorization header value (new salt every call)."""
        return solapi_authorization(self._api_key, self._api_secret, self._clock(), new_salt())

    async def _get(self, path: str, params: Mapping[str, str]) -> tuple[int, Any, str]:
        url = f"{self.base_url}{path}"
        try:
            async with self._client().get(
                url,
                params=dict(params),
                headers={"Authorization": self.authorization(), "Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                allow_redirects=False,
            ) as response:
                status, text = await read_answer("GET", shown_url(url), response)
        except TimeoutError as exc:
            raise ProviderError(
                "NETWORK_TIMEOUT", f"GET {shown_url(url)}: no answer within {self.timeout_s:g}s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise ProviderError("NETWORK_ERROR", f"GET {shown_url(url)}: {exc}") from exc
        try:
            body: Any = loads_provider_json(text) if text else None
        except ValueError:
            body = None
        return status, body, text

    async def get_delivery_status(self, query: StatusQuery) -> ProviderStatus | None:
        message_id = query.provider_message_id.strip()
        if not message_id:
            raise ProviderError("INVALID_REQUEST", "providerMessageId is required")
        status, body, text = await self._get(LIST_PATH, {"messageId": message_id, "limit": "1"})
        if status != 200:
            solapi_code, error_text = _error_message(body, text, status)
            prefix = f"{solapi_code}: " if solapi_code else ""
            raise ProviderError(
                code_for_http_status(status), prefix + error_text, http_status=status
            )
        if not isinstance(body, dict) or not isinstance(body.get("messageList"), dict):
            raise ProviderError(
                "PROVIDER_ERROR",
                f"malformed SOLAPI answer (no messageList object): {text.strip()[:200]!r}",
                http_status=status,
            )
        message_list: dict[str, Any] = body["messageList"]
        direct = message_list.get(message_id)
        message: dict[str, Any] | None = direct if isinstance(direct, dict) else None
        if message is None:
            message = next(
                (
                    item
                    for item in message_list.values()
                    if isinstance(item, dict) and item.get("messageId") == message_id
                ),
                None,
            )
        if message is None:
            return None
        try:
            return ProviderStatus.model_validate({**_status_fields(message), "raw": message})
        except ValidationError as exc:
            raise ProviderError("PROVIDER_ERROR", f"malformed SOLAPI message: {exc}") from exc

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._owns_session and not session.closed:
            await session.close()


# --- webhook ---------------------------------------------------------------------------------


def presented_token(headers: Mapping[str, str]) -> str | None:
    """The shared secret a webhook request carries: ``X-Webhook-Token`` or a Bearer token."""
    lowered = {key.lower(): value for key, value in headers.items()}
    token = lowered.get(WEBHOOK_TOKEN_HEADER.lower())
    if token:
        return token.strip()
    auth = lowered.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def check_shared_secret(provider_id: str, secret: str | None, headers: Mapping[str, str]) -> None:
    """Raise ``WebhookRejected(401)`` unless ``headers`` carry ``secret`` (constant time).
    ``secret`` may hold several comma-separated secrets while one is rotated: any of them is
    accepted (every one is compared, whichever matches)."""
    accepted = [part.strip().encode() for part in (secret or "").split(",") if part.strip()]
    if not accepted:
        raise WebhookRejected(401, f"{provider_id}: no webhookSecret configured")
    token = presented_token(headers)
    if token is None:
        raise WebhookRejected(401, f"{provider_id}: missing {WEBHOOK_TOKEN_HEADER}")
    # Bytes, as received: a header may carry octets that are not UTF-8.
    offered = token.encode("utf-8", "surrogateescape")
    matches = [hmac.compare_digest(offered, expected) for expected in accepted]
    if not any(matches):
        raise WebhookRejected(401, f"{provider_id}: bad webhook token")


def json_reports(body: bytes, *list_keys: str) -> list[Any]:
    """The report objects of a webhook body: an array, one object, or ``{<list_key>: ...}``;
    at most ``MAX_REPORTS_PER_REQUEST`` of them."""
    try:
        payload = loads_provider_json(body)
    except ValueError as exc:  # also UnicodeDecodeError and too deep nesting
        raise WebhookRejected(400, f"body is not JSON: {exc}") from None
    if isinstance(payload, dict):
        for key in list_keys:
            inner = payload.get(key)
            if isinstance(inner, list):
                payload = inner
                break
            if isinstance(inner, dict):
                payload = list(inner.values())
                break
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise WebhookRejected(400, "no reports in the body")
    if len(items) > MAX_REPORTS_PER_REQUEST:
        raise WebhookRejected(
            400, f"{len(items)} reports in the body; at most {MAX_REPORTS_PER_REQUEST} per request"
        )
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise WebhookRejected(400, f"report {index} is not a JSON object")
    return items


class SolapiWebhookAdapter:
    """SOLAPI delivery reports -> ``ProviderReportReceived`` (see the module docstring)."""

    def __init__(self, provider_id: str, *, webhook_secret: str | None) -> None:
        self.provider_id = provider_id
        self._secret = webhook_secret

    def verify(self, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        check_shared_secret(self.provider_id, self._secret, headers)

    def parse(
        self, headers: Mapping[str, str], body: bytes, received_at: datetime
    ) -> list[ProviderReportReceived]:
        reports: list[ProviderReportReceived] = []
        for index, item in enumerate(json_reports(body, "messageList", "data")):
            # Trimmed, as the fold trims a send result's providerMessageId (k-msg): " M1 " must
            # reach the record linked as "M1" (the IWINV adapter trims its ids too).
            message_id = (_text(item.get("messageId")) or "").strip() or None
            if message_id is None:
                raise WebhookRejected(400, f"report {index} has no messageId")
            fields = _status_fields(item)
            stamp = next(
                (
                    str(item[field])
                    for field in (
                        "dateUpdated",
                        "dateReported",
                        "dateReceived",
                        "dateCompleted",
                        "dateProcessed",
                    )
                    if item.get(field)
                ),
                "-",
            )
            event_id = bounded_event_id(
                f"{self.provider_id}:{message_id}:{fields['statusCode'] or '-'}:{stamp}"
            )
            try:
                reports.append(
                    ProviderReportReceived.model_validate(
                        {
                            **fields,
                            "eventId": event_id,
                            "providerId": self.provider_id,
                            "providerMessageId": message_id,
                            "receivedAt": received_at,
                            "raw": item,
                        }
                    )
                )
            except ValidationError as exc:
                raise WebhookRejected(400, f"report {index}: {exc}") from exc
        return reports
