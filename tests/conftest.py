"""Shared pytest fixtures.

Kafka: the session-scoped ``kafka_broker`` fixture starts one real single-node KRaft broker
(jars fetched from Maven Central with ``mvn`` on first use and cached) for every test that asks
for it. Set ``DELIVERYTRACK_TEST_BROKER=127.0.0.1:9092`` (or ``kafka://127.0.0.1:9092``) to use an
already running broker instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import settings

from deliverytrack.streams.dev.kafka_broker import BrokerInfo, KafkaBroker

# Property tests check what a fold does, not how fast: on 2 shared cores running 3 test
# processes, hypothesis's default 200 ms deadline per example failed a test that takes <1 ms
# alone. Tests that set a deadline of their own keep it.
settings.register_profile("deliverytrack", deadline=None)
settings.load_profile("deliverytrack")

TEST_BROKER_ENV = "DELIVERYTRACK_TEST_BROKER"

# The files that took longest (35-100 s each in a parallel run), longest first: they start
# first, so that no process of `pytest -n` (scripts/test.sh) begins one near the end of the run.
# Only the order of files changes (with --no-loadscope-reorder; the tests within a file keep
# theirs); a file missing here just runs in collection order.
SLOW_FILES_FIRST = (
    "tests/unit/streams/test_boundary.py",
    "tests/integration/test_demo.py",
    "tests/integration/test_replay_cli.py",
    "tests/integration/test_polling.py",
    "tests/integration/test_kafka_security.py",
    "tests/integration/test_broker_outage.py",
    "tests/integration/test_hostile_input.py",
    "tests/integration/test_security.py",
    "tests/integration/test_outbound_webhooks.py",
    "tests/integration/test_webhooks.py",
    "tests/integration/test_retention.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: n for n, path in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable


@dataclass(frozen=True)
class ExternalBroker:
    """A broker started outside the test session (``$DELIVERYTRACK_TEST_BROKER``)."""

    bootstrap_servers: str

    @property
    def url(self) -> str:
        return "kafka://" + self.bootstrap_servers.split(",")[0]


def _external_broker() -> ExternalBroker | None:
    value = os.environ.get(TEST_BROKER_ENV, "").strip()
    if not value:
        return None
    servers = ",".join(part.strip().removeprefix("kafka://") for part in value.split(","))
    return ExternalBroker(servers)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    """One real Kafka broker for the whole session; failing to start it fails the test."""
    external = _external_broker()
    if external is not None:
        yield external
        return
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    error: str | None = None
    try:
        broker.start()
    except RuntimeError as exc:
        error = str(exc)
    if error is not None:  # fail outside the except block: no chained traceback noise
        pytest.fail(f"could not start the test Kafka broker:\n{error}", pytrace=False)
    try:
        yield broker
    finally:
        # Its data is thrown away: a clean shutdown of the thousands of partitions the suite
        # made took 12-15 s at the end of every run, so SIGKILL after a short grace.
        broker.stop(timeout=3.0)
