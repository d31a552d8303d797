"""A fake SOLAPI (``GET /messages/v4/list``) on loopback, answering like api.solapi.com.

Authentication is SOLAPI's: ``Authorization: HMAC-SHA256 apiKey=..., date=..., salt=...,
signature=...`` with ``signature = hex HMAC-SHA256(apiSecret, date + salt)``; the date must be
within 15 minutes of the server clock and a (date, salt) pair is accepted once. Errors use
SOLAPI's shape ``{"errorCode": ..., "errorMessage": ...}``: 403 ``InvalidAPIKey``,
``SignatureDoesNotMatch``, ``RequestTimeTooSkewed``, ``DuplicatedSignature``, 400
``ValidationError``, 429 ``TooManyRequests``.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from typing import Any

from aiohttp import web

from tests.fakes import FakeServerBase, RecordedRequest

_AUTH = re.compile(
    r"^HMAC-SHA256 apiKey=(?P<key>[^,\s]+), date=(?P<date>[^,\s]+), "
    r"salt=(?P<salt>[^,\s]+), signature=(?P<sig>[0-9a-fA-F]+)$"
)
MAX_SKEW = timedelta(minutes=15)


def _now() -> datetime:
    return datetime.now(UTC)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"errorCode": code, "errorMessage": message}, status=status)


def _parse_iso(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


class FakeSolapiApi(FakeServerBase):
    def __init__(
        self,
        *,
        api_key: str = "NCSTESTKEY",
        api_secret: str = "test-secret-0123456789",  # noqa: S107 - a fake
        rate_limit_after: int | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        super().__init__(rate_limit_after=rate_limit_after)
        self.accounts = {api_key: api_secret}
        self.clock = clock
        self.messages: dict[str, dict[str, Any]] = {}
        self._seen_signatures: set[tuple[str, str, str]] = set()

    # --- test controls ----------------------------------------------------------------------

    def set_status(
        self,
        message_id: str,
        status_code: str,
        status_message: str | None = None,
        *,
        to: str = "01012345678",
        **dates: str,
    ) -> dict[str, Any]:
        """Create or update a message; ``dates`` are SOLAPI date fields (``dateSent=...``)."""
        message = self.messages.setdefault(
            message_id,
            {
                "messageId": message_id,
                "groupId": "G4V20240501000000ABCDEFGHIJKLMNO",
                "type": "SMS",
                "to": to,
                "from": "0212345678",
                "country": "82",
                "dateCreated": "2024-05-01T00:00:00.000Z",
            },
        )
        message["statusCode"] = status_code
        message["statusMessage"] = status_message
        message.update(dates)
        message["dateUpdated"] = dates.get("dateUpdated", message.get("dateUpdated"))
        return message

    def rate_limited_answer(self) -> web.Response:
        return _error(429, "TooManyRequests", "요청이 너무 많습니다. 잠시 후 다시 시도해 주세요.")

    # --- HTTP -------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/messages/v4/list", self.wrap(self._list))
        return app

    def _check_auth(self, request: web.Request) -> web.Response | None:
        match = _AUTH.match(request.headers.get("Authorization", ""))
        if match is None:
            return _error(403, "InvalidAuthorizationHeader", "Authorization 헤더 형식 오류")
        secret = self.accounts.get(match["key"])
        if secret is None:
            return _error(403, "InvalidAPIKey", "유효하지 않은 API Key 입니다.")
        expected = hmac.new(
            secret.encode(), (match["date"] + match["salt"]).encode(), sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, match["sig"].lower()):
            return _error(403, "SignatureDoesNotMatch", "Signature 가 일치하지 않습니다.")
        date = _parse_iso(match["date"])
        if date is None or abs(self.clock() - date) > MAX_SKEW:
            return _error(
                403, "RequestTimeTooSkewed", "요청 시각이 서버 시각과 15분 이상 다릅니다."
            )
        key = (match["key"], match["date"], match["salt"])
        if key in self._seen_signatures:
            return _error(403, "DuplicatedSignature", "이미 사용된 Signature 입니다.")
        self._seen_signatures.add(key)
        return None

    async def _list(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        denied = self._check_auth(request)
        if denied is not None:
            return denied
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            return _error(400, "ValidationError", "limit 은 숫자여야 합니다.")
        if not 0 < limit <= 500:
            return _error(400, "ValidationError", "limit 은 1 이상 500 이하여야 합니다.")
        wanted = request.query.get("messageId")
        selected = [
            message
            for message_id, message in self.messages.items()
            if wanted is None or message_id == wanted
        ][:limit]
        return web.json_response(
            {
                "startKey": None,
                "nextKey": None,
                "limit": limit,
                "messageList": {message["messageId"]: message for message in selected},
            }
        )
