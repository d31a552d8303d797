"""A fake IWINV (AlimTalk and SMS v2 history) on loopback, answering like bizservice.iwinv.kr.

One server serves both hosts under path prefixes: ``{base_url}/alimtalk`` plays
``https://alimtalk.bizservice.iwinv.kr`` and ``{base_url}/sms`` plays
``https://sms.bizservice.iwinv.kr``; both answer ``POST /api/history/``.

* AlimTalk: ``AUTH: base64(apiKey)``; IWINV puts its result in the body with HTTP 200:
  ``{"code": 200, "message", "totalCount", "list": [...]}``, a wrong key is
  ``{"code": 201, ...}``, a bad parameter ``{"code": 540, ...}``.
* SMS: ``secret: base64(smsApiKey&smsAuthKey)`` and the right ``companyid``; success is
  ``{"resultCode": 0, "message", "totalCount", "list": [...]}``, a wrong secret
  ``{"resultCode": 202, ...}``, a bad date ``{"resultCode": 43, ...}``.
* Rate limiting answers HTTP 429 ``{"code": 429, "message": ...}``.

``ignore_id_filter = True`` makes the history ignore seqNo/requestNo and list every message to
the phone (newest first), as a history search by phone does.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from aiohttp import web

from tests.fakes import FakeServerBase, RecordedRequest

_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class FakeIwinvApi(FakeServerBase):
    def __init__(
        self,
        *,
        api_key: str = "iwinv-alimtalk-key",
        sms_api_key: str = "iwinv-sms-key",
        sms_auth_key: str = "iwinv-sms-auth",
        sms_company_id: str = "company-1",
        rate_limit_after: int | None = None,
    ) -> None:
        super().__init__(rate_limit_after=rate_limit_after)
        self.api_key = api_key
        self.sms_secret = _b64(f"{sms_api_key}&{sms_auth_key}")
        self.sms_company_id = sms_company_id
        self.alimtalk: dict[int, dict[str, Any]] = {}
        self.sms: dict[str, dict[str, Any]] = {}
        self.ignore_id_filter = False

    @property
    def alimtalk_url(self) -> str:
        assert self.base_url is not None
        return f"{self.base_url}/alimtalk"

    @property
    def sms_url(self) -> str:
        assert self.base_url is not None
        return f"{self.base_url}/sms"

    # --- test controls ----------------------------------------------------------------------

    def set_alimtalk_status(
        self,
        seq_no: int,
        status_code: str | None,
        status_name: str | None = None,
        *,
        phone: str = "01012345678",
        send_date: str | None = None,
        receive_date: str | None = None,
        resend_status: str | None = None,
    ) -> dict[str, Any]:
        item = self.alimtalk.setdefault(
            seq_no, {"seqNo": seq_no, "phone": phone, "templateCode": "TPL_001"}
        )
        item.update(
            {
                "statusCode": status_code,
                "statusCodeName": status_name,
                "sendDate": send_date,
                "receiveDate": receive_date,
                "resendStatus": resend_status,
            }
        )
        return item

    def set_sms_status(
        self,
        request_no: str,
        status_code: str | None,
        status_msg: str | None = None,
        *,
        phone: str = "01012345678",
        send_date: str | None = None,
        msg_type: str = "SMS",
    ) -> dict[str, Any]:
        item = self.sms.setdefault(
            request_no,
            {
                "requestNo": request_no,
                "companyid": self.sms_company_id,
                "msgType": msg_type,
                "phone": phone,
                "callback": "0212345678",
            },
        )
        item.update(
            {"sendStatusCode": status_code, "sendStatusMsg": status_msg, "sendDate": send_date}
        )
        return item

    def rate_limited_answer(self) -> web.Response:
        return web.json_response(
            {"code": 429, "message": "요청 한도를 초과하였습니다."}, status=429
        )

    # --- HTTP -------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/alimtalk/api/history/", self.wrap(self._alimtalk_history))
        app.router.add_post("/sms/api/history/", self.wrap(self._sms_history))
        return app

    async def _alimtalk_history(
        self, request: web.Request, recorded: RecordedRequest
    ) -> web.Response:
        if request.headers.get("AUTH") != _b64(self.api_key):
            return web.json_response({"code": 201, "message": "인증에 실패하였습니다."})
        body = recorded.body
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("phone"), str)
            or not _DATETIME.match(str(body.get("startDate", "")))
            or not _DATETIME.match(str(body.get("endDate", "")))
        ):
            return web.json_response({"code": 540, "message": "요청 파라미터가 올바르지 않습니다."})
        seq_no = body.get("seqNo")
        items = [
            item
            for item in sorted(self.alimtalk.values(), key=lambda i: -int(i["seqNo"]))
            if item["phone"] == body["phone"]
            and (self.ignore_id_filter or seq_no is None or item["seqNo"] == seq_no)
        ]
        page_size = int(body.get("pageSize", 15))
        return web.json_response(
            {
                "code": 200,
                "message": "조회 성공",
                "totalCount": len(items),
                "list": items[:page_size],
            }
        )

    async def _sms_history(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        body = recorded.body
        if request.headers.get("secret") != self.sms_secret or (
            isinstance(body, dict) and body.get("companyid") != self.sms_company_id
        ):
            return web.json_response(
                {"resultCode": 202, "message": "SMS API 인증 실패 또는 SMS 서비스 권한이 없습니다."}
            )
        if (
            not isinstance(body, dict)
            or not _DATE.match(str(body.get("startDate", "")))
            or not _DATE.match(str(body.get("endDate", "")))
        ):
            return web.json_response(
                {"resultCode": 43, "message": "날짜와 시간 표현 형식에 맞춰 입력하여 주십시오."}
            )
        request_no = body.get("requestNo")
        items = [
            item
            for item in reversed(list(self.sms.values()))
            if item["phone"] == body.get("phone")
            and (self.ignore_id_filter or request_no is None or item["requestNo"] == request_no)
        ]
        page_size = int(body.get("pageSize", 15))
        return web.json_response(
            {
                "resultCode": 0,
                "message": "조회 성공",
                "totalCount": len(items),
                "list": items[:page_size],
            }
        )
