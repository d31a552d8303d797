"""The ``deliverytrack`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from pydantic import ValidationError

from deliverytrack.models.settings import Settings


def _settings(overrides: dict[str, Any]) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        print(f"deliverytrack: invalid configuration:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _worker(args: argparse.Namespace) -> int:
    import faust

    from deliverytrack.streams.admin import ensure_topics
    from deliverytrack.streams.app import create_app
    from deliverytrack.streams.topics import Topics

    settings = _settings(
        {"broker": args.broker, "data_dir": args.data_dir, "web_port": args.web_port}
    )
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
    worker.add_argument("--web-port", type=int, help="HTTP port (DELIVERYTRACK_WEB_PORT)")
    worker.set_defaults(run=_worker)

    demo = commands.add_parser(
        "demo", help="start a broker, a worker, a simulated provider and traffic; summarise"
    )
    demo.add_argument("--messages", type=int, default=10_000, help="messages to send (10000)")
    demo.add_argument("--duration", type=float, default=60.0, help="seconds to send them over")
    demo.add_argument("--broker", help="use this kafka://host:port instead of starting one")
    demo.add_argument("--keep", action="store_true", help="keep the temporary state directory")
    demo.set_defaults(run=_demo)
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
