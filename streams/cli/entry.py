"""The ``deliverytrack`` command."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from typing import Any

from deliverytrack.models.settings import Settings
from deliverytrack.streams import contract
from deliverytrack.streams.cli import demo, query, replay, tail, worker
from deliverytrack.streams.cli.config import settings_of

GLOBAL_OPTIONS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("--url", "url", {"help": "a worker's HTTP API (get, list, count, count-by, stats)"}),
    ("--token", "token", {"help": "API token (get, list, ...; prefer $DELIVERYTRACK_API_TOKEN)"}),
    ("--broker", "broker", {"help": "kafka://host:port (worker, demo, replay, history, tail)"}),
    ("--json", "json", {"action": "store_true", "help": "JSON for scripts"}),
)
"""Options taken before or after the subcommand (``deliverytrack --url X count`` is
``deliverytrack count --url X``); each applies to the commands that have it."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deliverytrack",
        description="Event-sourced message delivery tracking on Kafka. Configuration comes from "
        "DELIVERYTRACK_* environment variables; flags override them. --url, --token, --broker "
        "and --json go before or after the command.",
    )
    for flag, dest, options in GLOBAL_OPTIONS:
        # Stored apart (a subcommand's own default would overwrite it), merged by parse_args.
        parser.add_argument(flag, dest=f"global_{dest}", default=None, **options)
    commands = parser.add_subparsers(dest="command", required=True)
    worker.add_to(commands)
    demo.add_to(commands)
    replay.add_to(commands)
    query.add_query_commands(commands, settings_of)
    tail.add_to(commands, settings_of)
    contract.add_command(commands)  # deliverytrack schemas
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with the global options given before the subcommand merged into
    it: a command that has no such option refuses it (exit 2), as do two different values."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag, dest, _ in GLOBAL_OPTIONS:
        value = getattr(args, f"global_{dest}")
        delattr(args, f"global_{dest}")
        if value is None:
            continue
        if not hasattr(args, dest):
            parser.error(f"{flag} does not apply to the {args.command} command")
        current = getattr(args, dest)
        if current is None or current is False:
            setattr(args, dest, value)
        elif current != value:
            parser.error(f"{flag} is given twice, with different values")
    return args


EXIT_UNREACHABLE = 3


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not logging.getLogger().handlers:  # not when embedded (tests): their logging is theirs
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
        from deliverytrack.streams.worker.logs import install_log_gate

        install_log_gate()  # the worker's start-up wait for Kafka: a line per 10 s
        # The tools say themselves what failed (one line, below); the worker logs what its
        # clients say (rate-limited).
        quiet = args.command != "worker"
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL if quiet else logging.WARNING)
    try:
        result: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        cause = _connection_failure(exc)
        if cause is None:
            raise  # a bug: its traceback
        # One line: what failed and where, not the client library's traceback.
        message = f"deliverytrack {args.command}: {_unreachable(args, exc, cause)}"
        cause = None  # its traceback holds the clients: let them go (_collect_quietly)
    else:
        return result
    print(message, file=sys.stderr)
    _collect_quietly()
    return EXIT_UNREACHABLE


def _collect_quietly() -> None:
    """Collect the Kafka clients that failed to start now, without asyncio logging an
    "Unclosed AIOKafkaConsumer" for each: the one line above said what happened."""
    import gc

    asyncio_log = logging.getLogger("asyncio")
    level = asyncio_log.level
    asyncio_log.setLevel(logging.CRITICAL)
    try:
        gc.collect()
    finally:
        asyncio_log.setLevel(level)


def _unreachable(args: argparse.Namespace, exc: BaseException, cause: BaseException) -> str:
    text = str(exc)
    if type(exc).__name__ not in text and exc is cause:
        text = f"{type(exc).__name__}: {text}"
    if "cannot reach" in text or not _is_kafka(cause):
        return text
    broker = (
        getattr(args, "broker", None)
        or os.environ.get("DELIVERYTRACK_BROKER")
        or Settings.model_fields["broker"].default
    )
    return f"cannot reach Kafka at {broker}: {text}"


def _is_kafka(exc: BaseException) -> bool:
    from aiokafka.errors import KafkaError

    return isinstance(exc, KafkaError)


_NETWORK_ERRORS = (
    ConnectionRefusedError,
    ConnectionResetError,
    ConnectionAbortedError,
    socket.gaierror,
    TimeoutError,
)
"""A peer that cannot be reached (not every OSError: a closed stdout is not one)."""


def _connection_failure(exc: BaseException) -> BaseException | None:
    """The Kafka or network error behind ``exc`` (itself or a cause), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_kafka(current) or isinstance(current, _NETWORK_ERRORS):
            return current
        current = current.__cause__ or current.__context__
    return None


if __name__ == "__main__":
    raise SystemExit(main())
