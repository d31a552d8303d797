"""HTTP query API on the worker's web server (Faust's aiohttp server). JSON, camelCase.

- ``GET /records/{messageId}``, ``GET /records/{messageId}/history``
- ``GET /records`` (k-msg filters, limit, offset, orderBy, orderDirection)
- ``GET /records/count``, ``GET /records/count-by?groupBy=providerId,type,status``
- ``GET /records/due?now=..&limit=..`` (k-msg listDue)
- ``GET /stats`` and ``GET /stats?from=..&to=..``
- ``POST /internal/query``: one worker's partial answer, used by the others to gather

Bad parameters get 400 with the reason; a table that is not fully served (rebalancing) 503.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
from faust.web import Request, Response, View
from pydantic import ValidationError

from deliverytrack.streams.query import QueryService, Unavailable
from deliverytrack.tables.query import (
    LIST_PARAMS,
    QueryError,
    parse_filter,
    parse_group_by,
    parse_list_options,
    parse_period,
    parse_time,
)

log = logging.getLogger(__name__)

Handler = Callable[[Mapping[str, Sequence[str]]], Awaitable[Any]]


def _params(request: Request) -> dict[str, list[str]]:
    query: Any = request.query  # a MultiDict: repeated parameters
    return {name: list(query.getall(name)) for name in query}


def _json(view: View, body: Any, status: int = 200) -> Response:
    return view.bytes(orjson.dumps(body), content_type="application/json", status=status)


async def _answer(view: View, request: Request, handler: Handler) -> Response:
    try:
        return _json(view, await handler(_params(request)))
    except QueryError as exc:
        return _json(view, {"error": str(exc)}, 400)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        return _json(view, {"error": reasons}, 400)
    except Unavailable as exc:
        return _json(view, {"error": str(exc)}, 503)


def register_query_views(app: faust.App, queries: QueryService) -> None:
    @app.page("/records")
    class Records(View):
        async def get(self, request: Request) -> Response:
            async def handle(params: Mapping[str, Sequence[str]]) -> Any:
                flt = parse_filter(params, allowed=LIST_PARAMS)
                options = parse_list_options(params)
                records = await queries.list_records(flt, options)
                return {
                    "records": records,
                    "limit": options.limit,
                    "offset": options.offset,
                    "orderBy": options.order_by,
                    "orderDirection": options.order_direction,
                }

            return await _answer(self, request, handle)

    @app.page("/records/count")
    class Count(View):
        async def get(self, request: Request) -> Response:
            async def handle(params: Mapping[str, Sequence[str]]) -> Any:
                return {"count": await queries.count(parse_filter(params))}

            return await _answer(self, request, handle)

    @app.page("/records/count-by")
    class CountBy(View):
        async def get(self, request: Request) -> Response:
            async def handle(params: Mapping[str, Sequence[str]]) -> Any:
                group_by = parse_group_by(params)
                flt = parse_filter(params, allowed=("groupBy",))
                return {"groupBy": list(group_by), "rows": await queries.count_by(flt, group_by)}

            return await _answer(self, request, handle)

    @app.page("/records/due")
    class Due(View):
        async def get(self, request: Request) -> Response:
            async def handle(params: Mapping[str, Sequence[str]]) -> Any:
                unknown = set(params) - {"now", "limit"}
                if unknown:
                    raise QueryError(f"unknown parameter(s) {sorted(unknown)}; known: now, limit")
                now = parse_time("now", params["now"][0]) if "now" in params else datetime.now(UTC)
                limit = parse_list_options({"limit": params.get("limit", ["100"])}).limit
                return {"records": await queries.due(now, limit), "now": now.isoformat()}

            return await _answer(self, request, handle)

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
            async def handle(params: Mapping[str, Sequence[str]]) -> Any:
                dims = {k: v for k, v in params.items() if k in ("providerId", "type", "status")}
                unknown = set(params) - set(dims) - {"from", "to"}
                if unknown:
                    raise QueryError(
                        f"unknown parameter(s) {sorted(unknown)}; known: from, to (requestedAt "
                        "period, inclusive), providerId, type, status"
                    )
                period = parse_period(params)
                base = parse_filter(dims)
                flt = base.model_copy(
                    update={"requested_at_from": period.start, "requested_at_to": period.end}
                )
                body = await queries.stats(flt)
                if period.start is not None or period.end is not None:
                    body["period"] = {
                        "from": None if period.start is None else period.start.isoformat(),
                        "to": None if period.end is None else period.end.isoformat(),
                    }
                return body

            return await _answer(self, request, handle)

    @app.page("/internal/query")
    class InternalQuery(View):
        """A partial answer for some of this worker's partitions (used by the others)."""

        async def post(self, request: Request) -> Response:
            try:
                payload = orjson.loads(await request.read())
                partitions = [int(p) for p in payload.pop("partitions")]
                answers = await queries.run_local(payload, partitions)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                return _json(self, {"error": f"bad internal query: {exc}"}, 400)
            return _json(self, {"partitions": {str(p): v for p, v in answers.items()}})


async def _with_record(
    view: View, queries: QueryService, message_id: str, render: Callable[[bytes], bytes]
) -> Response:
    """The record (rendered), 404 when unknown, 503 when its partition has no worker."""
    try:
        raw = await queries.get_raw(message_id)
    except Unavailable as exc:
        return _json(view, {"error": str(exc)}, 503)
    if raw is None:
        return _json(view, {"error": f"no tracking record for messageId {message_id!r}"}, 404)
    return view.bytes(render(raw), content_type="application/json")
