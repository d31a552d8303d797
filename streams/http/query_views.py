"""HTTP on the worker's API listener (Faust's aiohttp server): the query API. JSON, camelCase.
Every route but ``/health`` needs a bearer token (``streams/http/auth.py``); the webhook ingress is
on its own listener (``streams/webhooks/listener.py``), which shares the JSON errors.

- ``GET /records/{messageId}``, ``GET /records/{messageId}/history``
- ``GET /records`` (k-msg filters, limit, offset, orderBy, orderDirection)
- ``GET /records/count``, ``GET /records/count-by?groupBy=providerId,type,status``
- ``GET /records/due?now=..&limit=..`` (k-msg listDue)
- ``GET /stats`` and ``GET /stats?from=..&to=..``
- ``GET /stats/summary?from=..&to=..`` (k-msg analytics ``getSummary``)
- ``POST /internal/query``: one worker's partial answer, used by the others to gather

Errors are JSON through one mechanism: ``streams/http/errors.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
from faust.web import Request, Response, View

from deliverytrack.models.common import utc_text
from deliverytrack.streams.http.auth import caller_of
from deliverytrack.streams.http.errors import (
    BadRequest,
    dumps_json,
    install_json_errors,
    request_input,
)
from deliverytrack.streams.query.service import QueryService, parse_internal_query
from deliverytrack.tables.query import (
    LIST_PARAMS,
    RecordFilter,
    next_after,
    parse_filter,
    parse_group_by,
    parse_list_options,
    parse_period,
    parse_summary,
    parse_time,
)

log = logging.getLogger(__name__)


def _utf8(name: str, value: str) -> str:
    """A query parameter or path segment as given, if it is valid Unicode (a percent-encoded
    invalid UTF-8 sequence decodes to lone surrogates)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise BadRequest(f"{name}: not valid UTF-8") from None
    return value


def _params(request: Request) -> dict[str, list[str]]:
    query: Any = request.query  # a MultiDict: repeated parameters
    params: dict[str, list[str]] = {}
    for name in query:
        _utf8("query parameter name", name)
        params[name] = [_utf8(name, value) for value in query.getall(name)]
    return params


def _json(view: View, body: Any, status: int = 200) -> Response:
    return view.bytes(dumps_json(body), content_type="application/json", status=status)


def register_query_views(app: faust.App, queries: QueryService) -> None:
    """The query API. Each view parses its parameters inside :func:`request_input` (a bad one
    is a 400 with the reason), then answers."""
    install_json_errors(app)

    @app.page("/records")
    class Records(View):
        async def get(self, request: Request) -> Response:
            with request_input():
                params = _params(request)
                flt = parse_filter(params, allowed=LIST_PARAMS)
                options = parse_list_options(params)
            _check_number_filters(request, flt)
            records = await queries.list_records(flt, options)
            return _json(
                self,
                {
                    "records": records,
                    "limit": options.limit,
                    "offset": options.offset,
                    "orderBy": options.order_by,
                    "orderDirection": options.order_direction,
                    "nextAfter": next_after(records, options),
                },
            )

    @app.page("/records/count")
    class Count(View):
        async def get(self, request: Request) -> Response:
            with request_input():
                flt = parse_filter(_params(request))
            _check_number_filters(request, flt)
            return _json(self, {"count": await queries.count(flt)})

    @app.page("/records/count-by")
    class CountBy(View):
        async def get(self, request: Request) -> Response:
            with request_input():
                params = _params(request)
                group_by = parse_group_by(params)
                flt = parse_filter(params, allowed=("groupBy",))
            _check_number_filters(request, flt)
            rows = await queries.count_by(flt, group_by)
            return _json(self, {"groupBy": list(group_by), "rows": rows})

    @app.page("/records/due")
    class Due(View):
        async def get(self, request: Request) -> Response:
            with request_input():
                params = _params(request)
                unknown = set(params) - {"now", "limit"}
                if unknown:
                    raise BadRequest(f"unknown parameter(s) {sorted(unknown)}; known: now, limit")
                now = (
                    parse_time("now", _single("now", params["now"]))
                    if "now" in params
                    else datetime.now(UTC)
                )
                limit = parse_list_options({"limit": params.get("limit", ["100"])}).limit
            records = await queries.due(now, limit)
            return _json(self, {"records": records, "now": utc_text(now)})

    @app.page("/records/{message_id}")
    class Record(View):
        async def get(self, request: Request, message_id: str) -> Response:
            return await _with_record(self, queries, message_id, lambda raw: raw)

    @app.page("/records/{message_id}/history")
    class History(View):
        async def get(self, request: Request, message_id: str) -> Response:
            def history(raw: bytes) -> bytes:
                record = orjson.loads(raw)
                return orjson.dumps(
                    {
                        "messageId": message_id,
                        "status": record["status"],
                        "history": record.get("statusHistory", []),
                    }
                )

            return await _with_record(self, queries, message_id, history)

    @app.page("/stats")
    class Stats(View):
        async def get(self, request: Request) -> Response:
            with request_input():
                params = _params(request)
                dims = {k: v for k, v in params.items() if k in ("providerId", "type", "status")}
                unknown = set(params) - set(dims) - {"from", "to"}
                if unknown:
                    raise BadRequest(
                        f"unknown parameter(s) {sorted(unknown)}; known: from, to (requestedAt "
                        "period, inclusive), providerId, type, status"
                    )
                period = parse_period(params)
                # Validated (not model_copy): the period's bounds pass the filter's checks here,
                # not later while answering.
                flt = RecordFilter.model_validate(
                    {
                        **dict(parse_filter(dims)),
                        "requested_at_from": period.start,
                        "requested_at_to": period.end,
                    }
                )
            body = await queries.stats(flt)
            if period.start is not None or period.end is not None:
                body["period"] = {
                    "from": None if period.start is None else utc_text(period.start),
                    "to": None if period.end is None else utc_text(period.end),
                }
            return _json(self, body)

    @app.page("/stats/summary")
    class Summary(View):
        """k-msg analytics ``getSummary`` (``tables.query.parse_summary`` for parameters)."""

        async def get(self, request: Request) -> Response:
            with request_input():
                query = parse_summary(_params(request))
            body = await queries.summary(
                query.filter, by_provider_id=query.by_provider_id, by_type=query.by_type
            )
            return _json(self, body)

    @app.page("/internal/query")
    class InternalQuery(View):
        """A partial answer for some of this worker's partitions (used by the others)."""

        async def post(self, request: Request) -> Response:
            body = await request.read()
            with request_input("bad internal query"):
                payload, partitions = parse_internal_query(body)
            answers = await queries.run_local(payload, partitions)
            return _json(self, {"partitions": {str(p): v for p, v in answers.items()}})


def _check_number_filters(request: Request, flt: RecordFilter) -> None:
    """With personal data protection on, a ``to``/``from`` filter tells whether a number was
    messaged (an oracle for enumerating numbers): only a PII token may use one. Filtering by
    "" (records without a sender) names no number."""
    numbers = [v for values in (flt.to, flt.from_) if values is not None for v in values if v]
    if numbers and not caller_of(request).may_filter_numbers:
        raise BadRequest(
            "filtering by phone number (to, from) needs a token from "
            "DELIVERYTRACK_API_PII_TOKENS while personal data protection is on; toHash and "
            "fromHash filters need none",
            status=403,
        )


def _single(name: str, values: Sequence[str]) -> str:
    if len(values) != 1:
        raise BadRequest(f"{name}: give it once, got {len(values)} values")
    return values[0]


async def _with_record(
    view: View, queries: QueryService, message_id: str, render: Callable[[bytes], bytes]
) -> Response:
    """The record (rendered), 404 when unknown, 503 when its partition has no worker."""
    _utf8("messageId", message_id)
    raw = await queries.get_raw(message_id)
    if raw is None:
        return _json(view, {"error": f"no tracking record for messageId {message_id!r}"}, 404)
    return view.bytes(render(raw), content_type="application/json")
