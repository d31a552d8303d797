"""``deliverytrack worker``: the fold engine, the poll loop, the webhook dispatcher and both
listeners, in one Faust worker process."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from deliverytrack.streams.cli.config import settings_of


def add_to(commands: Any) -> None:
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
    worker.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from deliverytrack.streams.http.auth import ListenerConfigError, check_listeners
    from deliverytrack.streams.kafka.topic_admin import ensure_topics
    from deliverytrack.streams.topics import Topics
    from deliverytrack.streams.worker.app import create_app
    from deliverytrack.streams.worker.process import Worker

    settings = settings_of(
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
    asyncio.run(ensure_topics(settings, Topics.of(settings)))
    app = create_app(settings)
    worker = Worker(
        app,
        loglevel=settings.log_level.upper(),
        quiet=True,
        shutdown_timeout_s=settings.shutdown_timeout_ms / 1000,
        log_repeat_interval_s=settings.log_repeat_interval_ms / 1000,
        crashed=lambda: app.failure() is not None,
    )
    worker.execute_from_commandline()
    return 0
