"""``deliverytrack get | list | count | count-by | stats``: the query API from a shell.

Reads go to a worker's HTTP API (``--url``, default
``http://127.0.0.1:<DELIVERYTRACK_WEB_PORT>``), which gathers from every worker, with a bearer
token (``--token``, else ``DELIVERYTRACK_API_TOKEN``, else the first of
``DELIVERYTRACK_API_TOKENS``). Tables for people, ``--json`` for scripts. A refused query exits
2 with the worker's reason (a missing or wrong token too); an unreachable worker exits 3; an
unknown record exits 1. ``tail`` (streams/cli/tail.py) follows the status-change topic.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from deliverytrack.models.settings import Settings
from deliverytrack.streams.api.client import (
    QueryFailed,
    auth_headers,
    read_answer,
    record_path,
    record_query,
    resolve_token,
)
from deliverytrack.streams.cli.config import whole

FILTERS = (
    ("message-id", "messageId"),
    ("provider-id", "providerId"),
    ("provider-message-id", "providerMessageId"),
    ("type", "type"),
    ("status", "status"),
    ("to", "to"),
    ("from", "from"),
    ("requested-from", "requestedAtFrom"),
    ("requested-to", "requestedAtTo"),
    ("updated-from", "statusUpdatedAtFrom"),
    ("updated-to", "statusUpdatedAtTo"),
)


def add_query_commands(commands: Any, settings_of: Callable[[dict[str, Any]], Settings]) -> None:
    def common(parser: argparse.ArgumentParser, filters: bool = True) -> None:
        parser.add_argument("--url", help="a worker's HTTP API (http://127.0.0.1:<web port>)")
        parser.add_argument(
            "--token",
            help="API token (default: $DELIVERYTRACK_API_TOKEN; prefer it: a flag shows in ps)",
        )
        parser.add_argument("--json", action="store_true", help="JSON for scripts")
        if filters:
            for flag, _ in FILTERS:
                parser.add_argument(
                    f"--{flag}", action="append", help="repeat or comma-separate for several"
                )

    get = commands.add_parser("get", help="one tracking record")
    get.add_argument("message_id")
    common(get, filters=False)
    get.set_defaults(run=lambda a: _run(a, settings_of, _get))

    lst = commands.add_parser("list", help="records matching k-msg filters")
    common(lst)
    lst.add_argument("--limit", type=whole(0, 10_000), default=20)
    lst.add_argument("--offset", type=whole(0, 10_000), default=0)
    lst.add_argument(
        "--order-by", default="requestedAt", choices=["requestedAt", "statusUpdatedAt"]
    )
    lst.add_argument("--order", default="desc", choices=["asc", "desc"])
    lst.add_argument("--after", help="continue after this (the previous page's nextAfter)")
    lst.set_defaults(run=lambda a: _run(a, settings_of, _list))

    count = commands.add_parser("count", help="how many records match")
    common(count)
    count.set_defaults(run=lambda a: _run(a, settings_of, _count))

    count_by = commands.add_parser("count-by", help="counts grouped by providerId, type, status")
    common(count_by)
    count_by.add_argument("group_by", help="comma-separated subset of providerId,type,status")
    count_by.set_defaults(run=lambda a: _run(a, settings_of, _count_by))

    stats = commands.add_parser("stats", help="delivery statistics, optionally for a period")
    common(stats, filters=False)
    stats.add_argument("--since", help="requestedAt from (ISO-8601 or epoch ms), inclusive")
    stats.add_argument("--until", help="requestedAt to (ISO-8601 or epoch ms), inclusive")
    stats.add_argument("--provider-id", action="append")
    stats.set_defaults(run=lambda a: _run(a, settings_of, _stats))


Handler = Callable[[aiohttp.ClientSession, str, argparse.Namespace], Any]


def _run(
    args: argparse.Namespace, settings_of: Callable[[dict[str, Any]], Settings], handler: Handler
) -> int:
    settings = settings_of({})
    url = (args.url or f"http://127.0.0.1:{settings.web_port}").rstrip("/")
    if not _is_http_url(url):
        print("deliverytrack: --url must look like http(s)://host[:port]", file=sys.stderr)
        return 2
    headers = auth_headers(resolve_token(args.token, settings))

    async def main() -> int:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=60), headers=headers
        ) as session:
            result: int = await handler(session, url, args)
            return result

    try:
        return asyncio.run(main())
    except QueryFailed as exc:
        print(f"deliverytrack: {exc.message or 'refused'} (HTTP {exc.status})", file=sys.stderr)
        return 1 if exc.status == 404 else 2
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(f"deliverytrack: cannot reach the worker at {url}: {exc}", file=sys.stderr)
        return 3


def _is_http_url(url: str) -> bool:
    try:
        parsed = urlsplit(url)
        parsed.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.hostname)


async def _fetch(
    session: aiohttp.ClientSession, url: str, params: Sequence[tuple[str, str]] = ()
) -> Any:
    async with session.get(url, params=list(params)) as response:
        return read_answer(response.status, response.reason, await response.read())


def _filter_params(args: argparse.Namespace) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    for flag, name in FILTERS:
        for value in getattr(args, flag.replace("-", "_"), None) or ():
            params.append((name, value))
    return params


def _dump(data: Any) -> None:
    print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*headers), line.format(*("-" * w for w in widths))]
    out.extend(line.format(*row) for row in rows)
    return "\n".join(out)


async def _get(session: aiohttp.ClientSession, url: str, args: argparse.Namespace) -> int:
    if (query := record_query(args.message_id)) is not None:
        found = (await _fetch(session, url + query[0], query[1]))["records"]
        if not found:
            raise QueryFailed(404, f"no record for messageId {args.message_id!r}")
        record = found[0]
    else:
        record = await _fetch(session, url + record_path(args.message_id))
    if args.json:
        _dump(record)
        return 0
    fields = [
        "messageId", "providerId", "providerMessageId", "type", "status", "to", "requestedAt",
        "statusUpdatedAt", "providerStatusCode", "providerStatusMessage", "sentAt",
        "deliveredAt", "failedAt", "attemptCount", "nextCheckAt", "lastError",
    ]  # fmt: skip
    width = max(len(f) for f in fields)
    for name in fields:
        if record.get(name) is not None:
            print(f"{name:<{width}}  {record[name]}")
    print("\nhistory:")
    rows = [
        [h["at"], h["status"], h["source"], h.get("provider") or "", str(h.get("details") or "")]
        for h in record.get("statusHistory", [])
    ]
    print(table(rows, ["at", "status", "source", "provider", "details"]))
    return 0


async def _list(session: aiohttp.ClientSession, url: str, args: argparse.Namespace) -> int:
    params = _filter_params(args) + [
        ("limit", str(args.limit)),
        ("offset", str(args.offset)),
        ("orderBy", args.order_by),
        ("orderDirection", args.order),
    ]
    if args.after:
        params.append(("after", args.after))
    body = await _fetch(session, f"{url}/records", params)
    if body.get("nextAfter"):  # on stderr, so --json output stays the records
        print(f"next page: --after '{body['nextAfter']}'", file=sys.stderr)
    if args.json:
        _dump(body["records"])
        return 0
    rows = [
        [
            r["messageId"],
            r["providerId"],
            r["type"],
            r["status"],
            r["requestedAt"],
            r["statusUpdatedAt"],
        ]
        for r in body["records"]
    ]
    print(
        table(rows, ["messageId", "provider", "type", "status", "requestedAt", "statusUpdatedAt"])
    )
    return 0


async def _count(session: aiohttp.ClientSession, url: str, args: argparse.Namespace) -> int:
    body = await _fetch(session, f"{url}/records/count", _filter_params(args))
    print(orjson.dumps(body).decode() if args.json else body["count"])
    return 0


async def _count_by(session: aiohttp.ClientSession, url: str, args: argparse.Namespace) -> int:
    params = [*_filter_params(args), ("groupBy", args.group_by)]
    body = await _fetch(session, f"{url}/records/count-by", params)
    if args.json:
        _dump(body["rows"])
        return 0
    group = body["groupBy"]
    rows = [[*(row["key"][g] for g in group), str(row["count"])] for row in body["rows"]]
    print(table(rows, [*group, "count"]))
    return 0


async def _stats(session: aiohttp.ClientSession, url: str, args: argparse.Namespace) -> int:
    params: list[tuple[str, str]] = []
    if args.since:
        params.append(("from", args.since))
    if args.until:
        params.append(("to", args.until))
    for value in args.provider_id or ():
        params.append(("providerId", value))
    body = await _fetch(session, f"{url}/stats", params)
    if args.json:
        _dump(body)
        return 0
    print(f"total messages         {body['totalMessages']}")
    print(f"delivery rate          {body['deliveryRate']:.2f} %")
    print(f"failure rate           {body['failureRate']:.2f} %")
    print(f"average delivery time  {body['averageDeliveryTime'] / 1000:.3f} s")
    for title, key in (("status", "byStatus"), ("provider", "byProvider"), ("type", "byType")):
        print()
        print(table([[k, str(v)] for k, v in body[key].items()], [title, "count"]))
    return 0
