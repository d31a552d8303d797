"""The worker's log gate: expected start-up noise is INFO, Kafka connection errors from every
logger are one line per interval (with how many more it stands for), other repeats too."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from deliverytrack.streams.worker.logs import LogGate, NoiseLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logged() -> Iterator[tuple[io.StringIO, Clock, logging.Handler]]:
    """A handler on a private logger tree, gated, writing ``LEVEL name: message`` lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    clock = Clock()
    handler.addFilter(LogGate(NoiseLimiter(10.0, clock), handler))
    root = logging.getLogger("gate-test")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    yield stream, clock, handler
    root.removeHandler(handler)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_the_coordinator_lookup_at_start_is_info_not_error(
    logged: tuple[io.StringIO, Clock, logging.Handler],
) -> None:
    stream, _, _ = logged
    coordinator = logging.getLogger("gate-test.aiokafka.consumer.group_coordinator")
    coordinator.error(
        "Group Coordinator Request failed: %s", "[Error 15] GroupCoordinatorNotAvailableError"
    )
    cluster = logging.getLogger("gate-test.aiokafka.cluster")
    cluster.error(
        "Topic %s not found in cluster metadata", "acme.deliverytrack-__assignor-__leader"
    )
    assert lines(stream) == [
        "INFO gate-test.aiokafka.consumer.group_coordinator: Group Coordinator Request failed: "
        "[Error 15] GroupCoordinatorNotAvailableError",
        "INFO gate-test.aiokafka.cluster: Topic acme.deliverytrack-__assignor-__leader not found "
        "in cluster metadata",
    ]
    # Another topic missing is not start-up noise.
    cluster.error("Topic %s not found in cluster metadata", "acme.send-results")
    assert lines(stream)[-1].startswith("ERROR")


def test_demoted_noise_is_dropped_where_info_is_not_wanted(
    logged: tuple[io.StringIO, Clock, logging.Handler],
) -> None:
    stream, _, handler = logged
    handler.setLevel(logging.WARNING)
    logging.getLogger("gate-test.x").error(
        "Group Coordinator Request failed: %s", "GroupCoordinatorNotAvailableError"
    )
    assert lines(stream) == []


def test_connection_errors_of_every_logger_are_one_line_per_interval(
    logged: tuple[io.StringIO, Clock, logging.Handler],
) -> None:
    stream, clock, _ = logged
    client = logging.getLogger("gate-test.aiokafka.client")
    fetcher = logging.getLogger("gate-test.aiokafka.consumer.fetcher")
    ours = logging.getLogger("gate-test.deliverytrack.streams.engine.loop")
    # What 12 s with the broker down looked like: ~400 lines a second, from several loggers.
    for step in range(4_800):
        clock.now = step * 0.0025
        match step % 4:
            case 0:
                client.error(
                    "Unable connect to node with id %s: %s", 1, "[Errno 111] Connect call failed"
                )
            case 1:
                client.error("Unable to update metadata from %s", [1])
            case 2:
                fetcher.error(
                    "Failed fetch messages from %s: %s", 1, "NodeNotReadyError: not ready"
                )
            case 3:
                ours.warning("fold: fetch failed (%s); retrying", "KafkaConnectionError: closed")
    shown = lines(stream)
    assert len(shown) == 2, shown  # at 0 s and at 10 s
    assert "more Kafka connection messages in the last 10 s, not shown" in shown[1]
    assert "[and 3,999 more" in shown[1], shown[1]


def test_other_repeats_are_limited_per_message_template(
    logged: tuple[io.StringIO, Clock, logging.Handler],
) -> None:
    stream, clock, _ = logged
    log = logging.getLogger("gate-test.deliverytrack.streams.polling.loop")
    for n in range(100):
        clock.now = n * 0.5  # 50 s
        log.warning("poll: provider %s answered %s", "acme", n)
        log.info("poll: info lines are never limited (%s)", n)
    warnings = [line for line in lines(stream) if line.startswith("WARNING")]
    assert len(warnings) == 5, warnings
    assert warnings[0].endswith("answered 0")
    assert warnings[1].endswith(
        "answered 20 [and 19 more messages like it in the last 10 s, not shown]"
    )
    assert len([line for line in lines(stream) if line.startswith("INFO")]) == 100


def test_a_record_is_judged_once_whatever_the_number_of_handlers(
    logged: tuple[io.StringIO, Clock, logging.Handler],
) -> None:
    stream, _, first = logged
    limiter = first.filters[0].limiter  # type: ignore[attr-defined]
    other = io.StringIO()
    second = logging.StreamHandler(other)
    second.addFilter(LogGate(limiter, second))
    root = logging.getLogger("gate-test")
    root.addHandler(second)
    try:
        root.getChild("a").error("Unable connect to node with id 1: refused")
        root.getChild("a").error("Unable connect to node with id 1: refused")
    finally:
        root.removeHandler(second)
    assert len(lines(stream)) == 1 and len(other.getvalue().splitlines()) == 1


def test_an_interval_of_zero_limits_nothing() -> None:
    limiter = NoiseLimiter(0)
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "Unable connect to node", (), None)
    again = logging.LogRecord("x", logging.ERROR, __file__, 1, "Unable connect to node", (), None)
    assert limiter.allow(record) and limiter.allow(again)
