"""``deliverytrack replay`` (rebuild the table from the input topics) and ``deliverytrack
history`` (every event of one message), the operator's tools over the topics."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from deliverytrack.streams.cli.config import seconds, settings_of


def add_to(commands: Any) -> None:
    replay = commands.add_parser(
        "replay",
        help="rebuild the table from the input topics into fresh state (new app id, data dir)",
    )
    replay.add_argument("--broker", help="kafka://host:port (DELIVERYTRACK_BROKER)")
    replay.add_argument("--app-id", help="app id of the rebuilt state (<appId>-replay-<time>)")
    replay.add_argument("--data-dir", help="where the rebuilt state goes (<dataDir>/replays)")
    replay.add_argument(
        "--verify",
        action="store_true",
        help="stop where the live table is and compare every record; exit 1 on a difference",
    )
    replay.add_argument("--timeout", type=seconds, default=3_600, help="give up after (s)")
    replay.set_defaults(run=run_replay_command)

    history = commands.add_parser(
        "history", help="every event of one message across the topics, in fold order"
    )
    history.add_argument("message_id")
    history.add_argument("--broker", help="kafka://host:port (DELIVERYTRACK_BROKER)")
    history.add_argument("--json", action="store_true", help="JSON for scripts")
    history.set_defaults(run=run_history)


def run_replay_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from deliverytrack.streams.replay import run_replay

    settings = settings_of({"broker": args.broker})
    return asyncio.run(
        run_replay(
            settings,
            replay_app_id=args.app_id,
            data_dir=Path(args.data_dir) if args.data_dir else None,
            verify=args.verify,
            timeout_s=args.timeout,
        )
    )


def run_history(args: argparse.Namespace) -> int:
    import orjson

    from deliverytrack.streams.replay import format_history, message_history

    settings = settings_of({"broker": args.broker})
    events = asyncio.run(message_history(settings, args.message_id))
    if args.json:
        print(orjson.dumps(events, option=orjson.OPT_INDENT_2).decode())
    elif not events:
        print(f"no events for messageId {args.message_id!r}", file=sys.stderr)
    else:
        print(format_history(events, settings.topic_prefix))
    return 0 if events else 1
