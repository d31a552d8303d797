"""The ``deliverytrack`` command line: global options before or after the subcommand, and one
line (no traceback) with a non-zero exit when Kafka or the worker cannot be reached."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from deliverytrack.streams.cli.entry import main, parse_args


@pytest.mark.parametrize(
    "argv",
    [
        ["--url", "http://10.0.0.7:6066", "count", "--status", "FAILED"],
        ["count", "--url", "http://10.0.0.7:6066", "--status", "FAILED"],
        ["count", "--status", "FAILED", "--url", "http://10.0.0.7:6066"],
    ],
)
def test_global_options_go_before_or_after_the_command(argv: list[str]) -> None:
    args = parse_args(argv)
    assert (args.command, args.url, args.status) == ("count", "http://10.0.0.7:6066", ["FAILED"])


def test_every_global_option_before_the_command() -> None:
    args = parse_args(["--url", "http://w:1", "--token", "t" * 20, "--json", "get", "m-1"])
    assert (args.url, args.token, args.json, args.message_id) == (
        "http://w:1",
        "t" * 20,
        True,
        "m-1",
    )
    assert parse_args(["--broker", "kafka://k:9092", "tail"]).broker == "kafka://k:9092"
    assert parse_args(["--broker", "kafka://k:9092", "worker"]).broker == "kafka://k:9092"
    assert parse_args(["--json", "history", "m-1"]).json is True
    assert parse_args(["count"]).url is None and parse_args(["count"]).json is False


def test_a_global_option_the_command_does_not_take_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--url", "http://w:1", "worker"])
    assert exited.value.code == 2
    assert "--url does not apply to the worker command" in capsys.readouterr().err


def test_two_different_values_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--url", "http://a:1", "count", "--url", "http://b:1"])
    assert "--url is given twice" in capsys.readouterr().err
    assert parse_args(["--url", "http://a:1", "count", "--url", "http://a:1"]).url == "http://a:1"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: nothing listens there


@pytest.mark.parametrize(
    "command",
    [["tail"], ["history", "m-1"], ["replay", "--timeout", "5"], ["tail", "--json"]],
    ids=["tail", "history", "replay", "tail-json"],
)
def test_no_broker_is_one_line_and_exit_3(command: list[str]) -> None:
    broker = f"kafka://127.0.0.1:{_closed_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "deliverytrack", "--broker", broker, *command],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("DELIVERYTRACK_")},
    )
    assert done.returncode == 3, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"deliverytrack {command[0]}: cannot reach Kafka at {broker}: ")
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_no_worker_is_one_line_and_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    assert main(["--url", url, "count"]) == 3
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"deliverytrack: cannot reach the worker at {url}")


def test_history_shows_a_kafka_timestamp_no_datetime_can_hold_as_milliseconds() -> None:
    """status-changes and the other topics the worker creates without LogAppendTime keep the
    producer's timestamp, which may be anything: ``history`` shows it instead of failing."""
    from deliverytrack.streams.replay import timestamp_text

    assert timestamp_text(1_795_424_400_000) == "2026-11-23T09:00:00Z"
    assert timestamp_text(4_000_000_000_000_000) == "4000000000000000 ms"
    assert timestamp_text(-(2**63)) == f"{-(2**63)} ms"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay", "--timeout", "nan"], "--timeout: must be a finite number of seconds above 0"),
        (["replay", "--timeout", "-5"], "--timeout: must be a finite number of seconds above 0"),
        (["demo", "--duration", "inf"], "--duration: must be a finite number of seconds above 0"),
        (["demo", "--messages", "0"], "--messages: must be at least 1, got 0"),
        (["tail", "--max", "-1"], "--max: must be at least 1, got -1"),
        (["list", "--limit", "10001"], "--limit: must be between 0 and 10000, got 10001"),
        (["list", "--offset", "x"], "--offset: not a whole number: 'x'"),
    ],
)
def test_a_number_out_of_range_is_a_usage_error_before_anything_runs(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "url", ["notaurl", "ftp://w:1", "http://", "http://w:99999", "http://[::1"]
)
def test_a_url_that_is_no_worker_address_is_a_usage_error(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--url", url, "count"]) == 2
    assert "--url must look like http(s)://host[:port]" in capsys.readouterr().err
