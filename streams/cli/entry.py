"""The ``deliverytrack`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
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
    from deliverytrack.streams.http.auth import ListenerConfigError, check_listeners
    from deliverytrack.streams.kafka.topic_admin import ensure_topics
    from deliverytrack.streams.topics import Topics
    from deliverytrack.streams.worker.app import app_failure, create_app
    from deliverytrack.streams.worker.process import Worker

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
    worker = Worker(
        app,
        loglevel=settings.log_level.upper(),
        quiet=True,
        shutdown_timeout_s=settings.shutdown_timeout_ms / 1000,
        log_repeat_interval_s=settings.log_repeat_interval_ms / 1000,
        crashed=lambda: app_failure(app) is not None,
    )
    worker.execute_from_commandline()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from deliverytrack.streams.dev.demo import run_demo

    if args.messages < 1 or args.duration <= 0:
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
        "demo",
        help="start a broker, a worker, a simulated provider and traffic; summarise, then keep "
        "the dashboard up until Ctrl-C",
        description="Start a Kafka broker, a worker and a simulated provider, send traffic, "
        "print a summary, then keep everything running so the dashboard (its URL is printed) "
        "stays up, until Ctrl-C or SIGTERM stops everything (exit code 0). "
        "--exit-after-summary stops after the summary instead, for scripts and CI.",
    )
    demo.add_argument("--messages", type=int, default=10_000, help="messages to send (10000)")
    demo.add_argument(
        "--duration",
        type=float,
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

    from deliverytrack.streams.cli.query import add_query_commands

    add_query_commands(commands, _settings)
    from deliverytrack.streams import contract

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
