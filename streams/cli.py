"""The ``deliverytrack`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from deliverytrack.models.settings import Settings


def _settings(overrides: dict[str, Any]) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except (ValidationError, SettingsError) as exc:
        print(f"deliverytrack: invalid configuration:\n{describe_settings_error(exc)}",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(2) from None


def describe_settings_error(exc: ValidationError | SettingsError) -> str:
    """What is wrong with the configuration, one line per problem, without the values given:
    pydantic's own text shows them (``input_value=...``), and they may be keys or secrets."""
    if isinstance(exc, SettingsError):
        # "error parsing value for field "x" from source "EnvSettingsSource"" (never the value)
        return f"  {exc}"
    lines = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(part) for part in error["loc"]) or "<settings>"
        env = "DELIVERYTRACK_" + str(error["loc"][0]).upper() if error["loc"] else ""
        lines.append(f"  {where}{f' ({env})' if env else ''}: {error['msg']}")
    return "\n".join(lines)


def _worker(args: argparse.Namespace) -> int:
    import faust

    from deliverytrack.streams.admin import ensure_topics
    from deliverytrack.streams.app import create_app
    from deliverytrack.streams.auth import ListenerConfigError, check_listeners
    from deliverytrack.streams.topics import Topics

    settings = _settings(
        {
            "broker": args.broker,
            "data_dir": args.data_dir,
            "web_port": args.web_port,
            "webhook_port": args.webhook_port,
        }
    )
    try:
        check_listeners(settings)  # before anything is created on the broker
    except ListenerConfigError as exc:
        print(f"deliverytrack worker: {exc}", file=sys.stderr)
        return 2
    asyncio.run(ensure_topics(settings, Topics.from_prefix(settings.topic_prefix, settings.app_id)))
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from deliverytrack.streams.demo import run_demo

    if args.messages < 1 or args.duration <= 0:
        print("deliverytrack demo: --messages must be >= 1 and --duration > 0", file=sys.stderr)
        return 2
    return run_demo(args.messages, args.duration, args.broker, args.keep)


def _replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from deliverytrack.streams.replay import run_replay

    settings = _settings({"broker": args.broker})
    return asyncio.run(
        run_replay(
            settings,
            replay_app_id=args.app_id,
            data_dir=Path(args.data_dir) if args.data_dir else None,
            verify=args.verify,
            timeout_s=args.timeout,
        )
    )


def _history(args: argparse.Namespace) -> int:
    import orjson

    from deliverytrack.streams.replay import format_history, message_history

    settings = _settings({"broker": args.broker})
    events = asyncio.run(message_history(settings, args.message_id))
    if args.json:
        print(orjson.dumps(events, option=orjson.OPT_INDENT_2).decode())
    elif not events:
        print(f"no events for messageId {args.message_id!r}", file=sys.stderr)
    else:
        print(format_history(events, settings.topic_prefix))
    return 0 if events else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deliverytrack",
        description="Event-sourced message delivery tracking on Kafka. Configuration comes from "
        "DELIVERYTRACK_* environment variables; flags override them.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="run a worker (fold engine + web server)")
    worker.add_argument("--broker", help="kafka://host:port (DELIVERYTRACK_BROKER)")
    worker.add_argument("--data-dir", help="state directory (DELIVERYTRACK_DATA_DIR)")
    worker.add_argument(
        "--web-port", type=int, help="API listener port, private (DELIVERYTRACK_WEB_PORT)"
    )
    worker.add_argument(
        "--webhook-port",
        type=int,
        help="webhook listener port, public (DELIVERYTRACK_WEBHOOK_PORT)",
    )
    worker.set_defaults(run=_worker)

    demo = commands.add_parser(
        "demo", help="start a broker, a worker, a simulated provider and traffic; summarise"
    )
    demo.add_argument("--messages", type=int, default=10_000, help="messages to send (10000)")
    demo.add_argument("--duration", type=float, default=60.0, help="seconds to send them over")
    demo.add_argument("--broker", help="use this kafka://host:port instead of starting one")
    demo.add_argument("--keep", action="store_true", help="keep the temporary state directory")
    demo.set_defaults(run=_demo)

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
    replay.add_argument("--timeout", type=float, default=3_600, help="give up after (s)")
    replay.set_defaults(run=_replay)

    history = commands.add_parser(
        "history", help="every event of one message across the topics, in fold order"
    )
    history.add_argument("message_id")
    history.add_argument("--broker", help="kafka://host:port (DELIVERYTRACK_BROKER)")
    history.add_argument("--json", action="store_true", help="JSON for scripts")
    history.set_defaults(run=_history)

    from deliverytrack.streams.cli_query import add_query_commands

    add_query_commands(commands, _settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
