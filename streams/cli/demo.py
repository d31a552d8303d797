"""``deliverytrack demo``: a broker, a worker, a simulated provider and traffic, a summary,
then the dashboard until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from deliverytrack.streams.cli.config import seconds, whole


def add_to(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="start a broker, a worker, a simulated provider and traffic; summarise, then keep "
        "the dashboard up until Ctrl-C",
        description="Start a Kafka broker, a worker and a simulated provider, send traffic, "
        "print a summary, then keep everything running so the dashboard (its URL is printed) "
        "stays up, until Ctrl-C or SIGTERM stops everything (exit code 0). "
        "--exit-after-summary stops after the summary instead, for scripts and CI.",
    )
    demo.add_argument("--messages", type=whole(1), default=10_000, help="messages to send (10000)")
    demo.add_argument(
        "--duration",
        type=seconds,
        default=60.0,
        help="seconds to send them over; then the demo waits up to 90 s more for every record "
        "to reach a final status (a progress line every 2 s), and prints the summary",
    )
    demo.add_argument("--broker", help="use this kafka://host:port instead of starting one")
    demo.add_argument(
        "--provider-url",
        help="use the simulated provider at this URL (python -m "
        "deliverytrack.streams.providers.simulated) instead of starting one",
    )
    demo.add_argument(
        "--keep", action="store_true", help="keep the temporary state directory (worker log)"
    )
    demo.add_argument(
        "--exit-after-summary",
        action="store_true",
        help="stop everything and exit after the summary (for scripts and CI) instead of "
        "serving the dashboard until Ctrl-C",
    )
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from deliverytrack.streams.dev.demo import run_demo

    if args.messages < 1 or not args.duration > 0:  # NaN too
        print("deliverytrack demo: --messages must be >= 1 and --duration > 0", file=sys.stderr)
        return 2
    return run_demo(
        args.messages,
        args.duration,
        args.broker,
        args.keep,
        args.provider_url,
        serve=not args.exit_after_summary,
    )
