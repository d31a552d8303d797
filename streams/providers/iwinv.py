"""IWINV: the delivery-status client (k-msg ``iwinv.delivery.ts``) and the webhook adapter.

Status API, routed by message type (other types are a non-retryable INVALID_REQUEST):

* **ALIMTALK** -> ``POST {baseUrl}/api/history/`` (``https://alimtalk.bizservice.iwinv.kr``),
  header ``AUTH: base64(apiKey)``, body ``{pageNum 1, pageSize 15, phone: digits of to,
  startDate: requestedAt - 1 day, endDate: now ("YYYY-MM-DD HH:mm:ss"), seqNo: int(id),
  reserve: "Y" if scheduled}``. Success is HTTP 200 with ``code == 200``; the item is the
  ``list`` entry whose ``seqNo`` is ours. ``statusCode``/``statusCodeName`` are kept.

  ========================================================  =========
  item                                                      status
  ========================================================  =========
  ``statusCode == "OK"`` or ``statusCodeName`` has "성공"    DELIVERED (deliveredAt = receiveDate,
                                                            else sendDate)
  otherwise, with a ``sendDate``                            FAILED (failedAt = sendDate)
  otherwise                                                 PENDING
  ========================================================  =========

* **SMS / LMS / MMS** -> ``POST {smsBaseUrl}/api/history/`` (``https://sms.bizservice.iwinv.kr``),
  header ``secret: base64(smsApiKey&smsAuthKey)``, body ``{version "1.0", companyid,
  startDate/endDate "YYYY-MM-DD", requestNo: id, pageNum 1, pageSize 15, phone}``. Success is
  HTTP 200 with ``resultCode == 0``; the item is the entry whose ``requestNo`` is ours.
  ``sendStatusCode`` and ``sendStatusMsg`` (else ``sendStatus``) are kept. Evaluated in order:

  ====================================================  =================
  condition                                             status
  ====================================================  =================
  code ``06`` or ``1000``                               DELIVERED
  message contains "전송 성공"                          DELIVERED
  message contains "대기" or "처리중"                   PENDING
  code ``00`` or ``01``                                 PENDING
  no code and no message                                UNKNOWN
  anything else                                         FAILED
  ====================================================  =================

  sentAt = sendDate, and deliveredAt or failedAt = sendDate according to the status.

Error codes in the AlimTalk body (``code``): 201, 206, 401, 403 AUTHENTICATION_FAILED; 429
RATE_LIMIT_EXCEEDED; 519 INSUFFICIENT_BALANCE; 404, 501 TEMPLATE_NOT_FOUND; 502-517, 540
INVALID_REQUEST; 518 and other >= 500 PROVIDER_ERROR; anything else INVALID_REQUEST. SMS
``resultCode``: 14, 15, 202, 206 AUTHENTICATION_FAILED; 50 INSUFFICIENT_BALANCE; 13, 21-23, 31-33,
41-44 INVALID_REQUEST; anything else PROVIDER_ERROR (retryable).

Differences from k-msg, on purpose (kmsg-behaviour.md 9.2, **[quirk]** and section 15):

* k-msg falls back to ``list[0]`` when no entry has our seqNo/requestNo: that can be another
  message to the same phone. Here no match means "no result yet" (``None``), and a non-numeric
  AlimTalk id (it is ``String(seqNo)``) is a non-retryable INVALID_REQUEST.
* k-msg uses the HTTP status as the error code when the body has none, so a bodyless gateway
  502/503/504 becomes a permanent INVALID_REQUEST. Here an HTTP 429 or 5xx is classified by the
  HTTP status first (retryable), whatever the body says; 401/403 are AUTHENTICATION_FAILED.
  Other AlimTalk statuses without a code go through the code table as in k-msg (a bodyless 404
  is TEMPLATE_NOT_FOUND, non-retryable).
* A bodyless SMS history 4xx is a non-retryable INVALID_REQUEST (k-msg: PROVIDER_ERROR,
  retried until the tracking window closes).
* k-msg reports every SMS history failure as retryable PROVIDER_ERROR, so a wrong SMS key is
  retried until the tracking window closes. Here IWINV's SMS auth codes are non-retryable
  AUTHENTICATION_FAILED (the mapping k-msg uses for SMS sends).
* Dates are written and read as Korea Standard Time (UTC+9, IWINV's zone), never the host's
  local zone.
* A 200 answer that is not JSON, or lacks a ``list`` array, is a retryable PROVIDER_ERROR.

Webhook
    IWINV documents no signed delivery-report push. :class:`IwinvWebhookAdapter` accepts reports
    shaped like the history items above (AlimTalk items with ``seqNo``, SMS items with
    ``requestNo``), as one object, an array, or ``{"list": [...]}``, and requires the provider's
    ``webhookSecret`` as ``X-Webhook-Token: <secret>`` or ``Authorization: Bearer <secret>`` (for
    a URL-only callback, ``?token=<secret>`` copied into ``X-Webhook-Token`` by the ingress).
    ``eventId`` is ``<providerId>:alimtalk:<seqNo>:<statusCode>:<receiveDate|sendDate>`` or
    ``<providerId>:sms:<requestNo>:<sendStatusCode>:<sendDate>`` (``-`` for a missing part).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Final

import aiohttp
from pydantic import ValidationError

from deliverytrack.models.enums import MessageType, TrackingStatus
from deliverytrack.models.events import ProviderReportReceived, ProviderStatus
from deliverytrack.streams.clock import utc_now
from deliverytrack.streams.providers.base import (
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
from deliverytrack.streams.providers.solapi import check_shared_secret, json_reports

IWINV_ALIMTALK_BASE_URL: Final = "https://alimtalk.bizservice.iwinv.kr"
IWINV_SMS_BASE_URL: Final = "https://sms.bizservice.iwinv.kr"
HISTORY_PATH: Final = "/api/history/"
KST: Final = timezone(timedelta(hours=9), "KST")
SMS_HISTORY_MAX_RANGE: Final = timedelta(days=90)
_DATETIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
_DATE_FORMAT: Final = "%Y-%m-%d"
_JSON_CONTENT_TYPE: Final = "application/json;charset=UTF-8"

_SMS_TYPES: Final = frozenset({MessageType.SMS, MessageType.LMS, MessageType.MMS})


def digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def format_kst_datetime(value: datetime) -> str:
    return value.astimezone(KST).strftime(_DATETIME_FORMAT)


def format_kst_date(value: datetime) -> str:
    return value.astimezone(KST).strftime(_DATE_FORMAT)


def parse_kst_datetime(value: Any) -> datetime | None:
    """``YYYY-MM-DD HH:mm:ss`` (or ISO-8601) as KST -> aware UTC; anything else, or a date out
    of the range an event holds (``storable_time``), ``None``."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        parsed = datetime.strptime(text, _DATETIME_FORMAT)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=KST)
    return storable_time(parsed)


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


# --- status mappings -------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _code_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


def map_alimtalk_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """status and dates of one AlimTalk history item (table in the module docstring)."""
    status_code = _code_text(item.get("statusCode"))
    status_message = _text(item.get("statusCodeName"))
    send_date = parse_kst_datetime(item.get("sendDate"))
    receive_date = parse_kst_datetime(item.get("receiveDate"))
    delivered = status_code == "OK" or (status_message is not None and "성공" in status_message)
    fields: dict[str, Any] = {
        "statusCode": status_code,
        "statusMessage": status_message,
        "sentAt": send_date,
    }
    if delivered:
        fields["status"] = TrackingStatus.DELIVERED
        fields["deliveredAt"] = receive_date or send_date
    elif send_date is not None:
        fields["status"] = TrackingStatus.FAILED
        fields["failedAt"] = send_date
    else:
        fields["status"] = TrackingStatus.PENDING
    return fields


def map_sms_history_status(status_code: str | None, status_message: str | None) -> TrackingStatus:
    """k-msg ``mapSmsV2HistoryStatus`` (table in the module docstring)."""
    if status_code in ("06", "1000"):
        return TrackingStatus.DELIVERED
    if status_message is not None:
        if "전송 성공" in status_message:
            return TrackingStatus.DELIVERED
        if "대기" in status_message or "처리중" in status_message:
            return TrackingStatus.PENDING
    if status_code in ("00", "01"):
        return TrackingStatus.PENDING
    if not status_code and not status_message:
        return TrackingStatus.UNKNOWN
    return TrackingStatus.FAILED


def map_sms_item(item: Mapping[str, Any]) -> dict[str, Any]:
    status_code = _code_text(item.get("sendStatusCode"))
    status_message = _text(item.get("sendStatusMsg")) or _text(item.get("sendStatus"))
    send_date = parse_kst_datetime(item.get("sendDate"))
    status = map_sms_history_status(status_code, status_message)
    fields: dict[str, Any] = {
        "status": status,
        "statusCode": status_code,
        "statusMessage": status_message,
        "sentAt": send_date,
    }
    if status is TrackingStatus.DELIVERED:
        fields["deliveredAt"] = send_date
    elif status is TrackingStatus.FAILED:
        fields["failedAt"] = send_date
    return fields


def map_iwinv_code(code: int) -> str:
    """k-msg ``mapIwinvCodeToKMsgErrorCode`` for an AlimTalk body ``code``."""
    if code in (201, 206, 401, 403):
        return "AUTHENTICATION_FAILED"
    if code == 429:
        return "RATE_LIMIT_EXCEEDED"
    if code == 519:
        return "INSUFFICIENT_BALANCE"
    if code in (404, 501):
        return "TEMPLATE_NOT_FOUND"
    if 502 <= code <= 517 or code == 540:
        return "INVALID_REQUEST"
    if code >= 500:
        return "PROVIDER_ERROR"
    return "INVALID_REQUEST"


_SMS_AUTH_CODES: Final = frozenset({"14", "15", "202", "206"})
_SMS_INVALID_CODES: Final = frozenset(
    {"13", "21", "22", "23", "31", "32", "33", "41", "42", "43", "44"}
)


def map_sms_result_code(code: str) -> str:
    """An SMS ``resultCode`` other than 0 -> KMsgErrorCode (k-msg ``mapSmsErrorCode``)."""
    if code in _SMS_AUTH_CODES:
        return "AUTHENTICATION_FAILED"
    if code == "50":
        return "INSUFFICIENT_BALANCE"
    if code in _SMS_INVALID_CODES:
        return "INVALID_REQUEST"
    return "PROVIDER_ERROR"


def _int_code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _alimtalk_code(body: Any) -> int | None:
    """k-msg: ``body.code``, else a body that is a bare number, else none."""
    if isinstance(body, dict):
        return _int_code(body.get("code"))
    if isinstance(body, int) and not isinstance(body, bool):
        return body
    return None


def _body_message(body: Any, text: str, status: int) -> str:
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str) and message:
            return message
    return text.strip()[:200] or f"HTTP {status}"


def _http_failure(status: int, body: Any, text: str) -> ProviderError | None:
    """Transport-level classification first: 429, 5xx, 401/403 go by the HTTP status."""
    if status == 429 or status >= 500 or status in (401, 403, 408):
        return ProviderError(
            code_for_http_status(status), _body_message(body, text, status), http_status=status
        )
    return None


# --- the client ------------------------------------------------------------------------------


class IwinvProvider:
    """The StatusProvider for IWINV (``kind: "iwinv"``): AlimTalk and SMS v2 history."""

    supports_status: bool = True

    def __init__(
        self,
        provider_id: str,
        *,
        api_key: str | None = None,
        sms_api_key: str | None = None,
        sms_auth_key: str | None = None,
        sms_company_id: str | None = None,
        base_url: str = IWINV_ALIMTALK_BASE_URL,
        sms_base_url: str = IWINV_SMS_BASE_URL,
        x_forwarded_for: str | None = None,
        timeout_s: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.provider_id = provider_id
        self.base_url = base_url.rstrip("/")
        self.sms_base_url = sms_base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._api_key = api_key or None
        self._sms_api_key = sms_api_key or None
        self._sms_auth_key = sms_auth_key or None
        self._sms_company_id = sms_company_id or None
        self._x_forwarded_for = x_forwarded_for or None
        self._session = session
        self._owns_session = session is None
        self._clock = clock

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    def _sms_secret(self) -> str | None:
        """``base64(smsApiKey&smsAuthKey)``; legacy: ``base64(apiKey&(smsAuthKey|smsApiKey))``."""
        if self._sms_api_key and self._sms_auth_key:
            return b64(f"{self._sms_api_key}&{self._sms_auth_key}")
        legacy = self._sms_auth_key or self._sms_api_key
        if legacy and self._api_key:
            return b64(f"{self._api_key}&{legacy}")
        return None

    def _headers(self, auth: Mapping[str, str]) -> dict[str, str]:
        headers = {"Content-Type": _JSON_CONTENT_TYPE, **auth}
        if self._x_forwarded_for:
            headers["X-Forwarded-For"] = self._x_forwarded_for
        return headers

    async def _post(
        self, url: str, headers: Mapping[str, str], payload: Mapping[str, Any]
    ) -> tuple[int, Any, str]:
        try:
            async with self._client().post(
                url,
                data=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
                headers=dict(headers),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                allow_redirects=False,
            ) as response:
                status, text = await read_answer("POST", shown_url(url), response)
        except TimeoutError as exc:
            raise ProviderError(
                "NETWORK_TIMEOUT", f"POST {shown_url(url)}: no answer within {self.timeout_s:g}s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise ProviderError("NETWORK_ERROR", f"POST {shown_url(url)}: {exc}") from exc
        try:
            body: Any = loads_provider_json(text) if text else None
        except ValueError:
            body = None
        return status, body, text

    async def get_delivery_status(self, query: StatusQuery) -> ProviderStatus | None:
        if query.type is MessageType.ALIMTALK:
            return await self._alimtalk_status(query)
        if query.type in _SMS_TYPES:
            return await self._sms_status(query)
        raise ProviderError(
            "INVALID_REQUEST", f"IWINV has no delivery status for message type {query.type}"
        )

    @staticmethod
    def _common(query: StatusQuery) -> tuple[str, str]:
        provider_message_id = query.provider_message_id.strip()
        if not provider_message_id:
            raise ProviderError("INVALID_REQUEST", "providerMessageId is required")
        phone = digits(query.to)
        if not phone:
            raise ProviderError("INVALID_REQUEST", "to is required")
        return provider_message_id, phone

    @staticmethod
    def _result(fields: Mapping[str, Any], item: dict[str, Any]) -> ProviderStatus:
        try:
            return ProviderStatus.model_validate({**fields, "raw": item})
        except ValidationError as exc:
            raise ProviderError("PROVIDER_ERROR", f"malformed IWINV history item: {exc}") from exc

    async def _alimtalk_status(self, query: StatusQuery) -> ProviderStatus | None:
        if not self._api_key:
            raise ProviderError(
                "INVALID_REQUEST", "IWINV AlimTalk status needs apiKey (the AlimTalk API key)"
            )
        provider_message_id, phone = self._common(query)
        try:
            seq_no = int(provider_message_id)
        except ValueError:
            raise ProviderError(
                "INVALID_REQUEST",
                f"IWINV AlimTalk providerMessageId must be the numeric seqNo, "
                f"got {provider_message_id!r}",
            ) from None
        payload: dict[str, Any] = {
            "pageNum": 1,
            "pageSize": 15,
            "phone": phone,
            "startDate": format_kst_datetime(query.requested_at - timedelta(days=1)),
            "endDate": format_kst_datetime(self._clock()),
            "seqNo": seq_no,
        }
        if query.scheduled_at is not None:
            payload["reserve"] = "Y"
        url = f"{self.base_url}{HISTORY_PATH}"
        status, body, text = await self._post(
            url, self._headers({"AUTH": b64(self._api_key)}), payload
        )
        failure = _http_failure(status, body, text)
        if failure is not None:
            raise failure
        code = _alimtalk_code(body)
        if status != 200 or code != 200:
            if code is None:
                if status == 200:
                    raise ProviderError(
                        "PROVIDER_ERROR",
                        f"malformed IWINV history answer: {text.strip()[:200]!r}",
                        http_status=status,
                    )
                # k-msg: without a code in the body the HTTP status goes through the code
                # table (a bodyless 404 is TEMPLATE_NOT_FOUND); 429, 5xx, 401/403 and 408 were
                # classified by the HTTP status above.
                raise ProviderError(
                    map_iwinv_code(status),
                    _body_message(body, text, status),
                    http_status=status,
                )
            raise ProviderError(
                map_iwinv_code(code),
                f"IWINV code {code}: {_body_message(body, text, status)}",
                http_status=status,
            )
        items = body.get("list") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise ProviderError("PROVIDER_ERROR", "malformed IWINV history answer: no list")
        item = next(
            (
                entry
                for entry in items
                if isinstance(entry, dict) and _int_code(entry.get("seqNo")) == seq_no
            ),
            None,
        )
        if item is None:
            return None
        return self._result(map_alimtalk_item(item), item)

    async def _sms_status(self, query: StatusQuery) -> ProviderStatus | None:
        secret = self._sms_secret()
        if secret is None:
            raise ProviderError(
                "INVALID_REQUEST", "IWINV SMS status needs smsApiKey and smsAuthKey"
            )
        if not self._sms_company_id:
            raise ProviderError("INVALID_REQUEST", "IWINV SMS status needs smsCompanyId")
        provider_message_id, phone = self._common(query)
        start = query.requested_at - timedelta(days=1)
        end = self._clock()
        if end - start > SMS_HISTORY_MAX_RANGE:
            raise ProviderError(
                "INVALID_REQUEST", "IWINV SMS history date range must be within 90 days"
            )
        payload = {
            "version": "1.0",
            "companyid": self._sms_company_id,
            "startDate": format_kst_date(start),
            "endDate": format_kst_date(end),
            "requestNo": provider_message_id,
            "pageNum": 1,
            "pageSize": 15,
            "phone": phone,
        }
        url = f"{self.sms_base_url}{HISTORY_PATH}"
        status, body, text = await self._post(url, self._headers({"secret": secret}), payload)
        failure = _http_failure(status, body, text)
        if failure is not None:
            raise failure
        raw_code = body.get("resultCode") if isinstance(body, dict) else None
        code = _code_text(raw_code)
        if status != 200 or code is None or _int_code(code) != 0:
            if code is None:
                error = "PROVIDER_ERROR" if status == 200 else code_for_http_status(status)
                raise ProviderError(
                    error,
                    f"malformed IWINV SMS history answer: {text.strip()[:200]!r}",
                    http_status=status,
                )
            raise ProviderError(
                map_sms_result_code(code),
                f"IWINV resultCode {code}: {_body_message(body, text, status)}",
                http_status=status,
            )
        items = body.get("list") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise ProviderError("PROVIDER_ERROR", "malformed IWINV SMS history answer: no list")
        item = next(
            (
                entry
                for entry in items
                if isinstance(entry, dict)
                and entry.get("requestNo") is not None
                and str(entry.get("requestNo")) == provider_message_id
            ),
            None,
        )
        if item is None:
            return None
        return self._result(map_sms_item(item), item)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._owns_session and not session.closed:
            await session.close()


# --- webhook ---------------------------------------------------------------------------------


class IwinvWebhookAdapter:
    """IWINV history-shaped delivery reports -> ``ProviderReportReceived``."""

    def __init__(self, provider_id: str, *, webhook_secret: str | None) -> None:
        self.provider_id = provider_id
        self._secret = webhook_secret

    def verify(self, headers: Mapping[str, str], body: bytes, now: datetime) -> None:
        check_shared_secret(self.provider_id, self._secret, headers)

    def parse(
        self, headers: Mapping[str, str], body: bytes, received_at: datetime
    ) -> list[ProviderReportReceived]:
        reports: list[ProviderReportReceived] = []
        for index, item in enumerate(json_reports(body, "list", "data")):
            if item.get("seqNo") is not None:
                channel = "alimtalk"
                message_id = _code_text(item.get("seqNo"))
                fields = map_alimtalk_item(item)
                stamp = _text(item.get("receiveDate")) or _text(item.get("sendDate"))
            elif item.get("requestNo") is not None:
                channel = "sms"
                message_id = _code_text(item.get("requestNo"))
                fields = map_sms_item(item)
                stamp = _text(item.get("sendDate"))
            else:
                raise WebhookRejected(400, f"report {index} has neither seqNo nor requestNo")
            if not message_id:
                raise WebhookRejected(400, f"report {index} has an empty message id")
            event_id = bounded_event_id(
                f"{self.provider_id}:{channel}:{message_id}:"
                f"{fields['statusCode'] or '-'}:{stamp or '-'}"
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
