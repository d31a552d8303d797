"""``deliverytrack tail``: follow the status-change topic, one line (or JSON object) per
change."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import orjson

from deliverytrack.models.common import utc_text
from deliverytrack.models.events import StatusChanged
from deliverytrack.models.settings import Settings
from deliverytrack.streams.cli.config import whole


def add_to(commands: Any, settings_of: Callable[[dict[str, Any]], Settings]) -> None:
    tail = commands.add_parser("tail", help="follow the status-change topic")
    tail.add_argument("--broker", help="kafka://host:port (DELIVERYTRACK_BROKER)")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.add_argument("--max", type=whole(1), help="stop after this many changes")
    tail.set_defaults(run=lambda a: _tail(a, settings_of))


def format_change(change: StatusChanged, as_json: bool = False) -> str:
    """One line of ``tail``: JSON without the record (a slim change's ``changes`` are kept),
    or time, id, transition, source."""
    if as_json:
        left_out = {"record"} if change.changes is not None else {"record", "changes"}
        data = change.model_dump(mode="json", by_alias=True, exclude=left_out)
        return orjson.dumps(data).decode()
    previous = change.previous_status.value if change.previous_status else "-"
    return (
        f"{utc_text(change.changed_at)}  {change.message_id}  "
        f"{previous} -> {change.status.value}  ({change.source.value})"
    )


def _tail(args: argparse.Namespace, settings_of: Callable[[dict[str, Any]], Settings]) -> int:
    from deliverytrack.streams.api.client import follow_status_changes

    settings = settings_of({"broker": args.broker})

    async def main() -> None:
        seen = 0
        ready = asyncio.Event()
        stream = follow_status_changes(
            settings, from_beginning=args.from_beginning, on_ready=ready.set
        )
        async for change in stream:
            print(format_change(change, as_json=args.json), flush=True)
            seen += 1
            if args.max is not None and seen >= args.max:
                await stream.aclose()
                return

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0
