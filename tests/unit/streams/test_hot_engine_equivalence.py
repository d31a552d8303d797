"""The engine's fold with the hot path (``tables.hot``) against the same engine with it off
(every input on the pydantic models, as before issue 20), each on its own RocksDB store: the
same outputs on the same topics with the same keys and bytes (dead letters but for the time
they were written), the same records and markers, and afterwards the same stores byte for
byte, derived data included (due, expiry and time indexes, aggregates: what the store reads
of a hot record through ``HotFacts``)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deliverytrack.models.settings import Settings
from deliverytrack.streams.engine.loop import FoldEngine
from deliverytrack.streams.engine.routing import Output
from deliverytrack.streams.state.store import META, RECORD, PartitionStore, Position, _untagged
from deliverytrack.tables.hot import codec
from tests.strategies import (
    POLICIES,
    STATUS_CHANGE_RECORDS,
    Input,
    fold_inputs,
    with_status_change_record,
)

KEEP = 300


@contextmanager
def engine_on_store(
    policy: str, hot: bool, status_change_record: str = "full"
) -> Iterator[tuple[FoldEngine, PartitionStore]]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            dead_letter_value_bytes=KEEP,
            status_change_record=status_change_record,  # type: ignore[arg-type]
        )
        engine = FoldEngine(settings)
        assert engine.batch.policy.status_change_record == status_change_record
        engine.batch.policy = with_status_change_record(POLICIES[policy], status_change_record)
        engine.batch.hot.enabled = hot
        store = PartitionStore(Path(tmp) / "p0.db", cache_size=3)
        engine.partitions.attach(0, store)
        try:
            yield engine, store
        finally:
            store.close()


def _topic(engine: FoldEngine, kind: str) -> str:
    topics = engine.topics
    return {
        codec.SEND: topics.send_results,
        codec.COMMAND: topics.commands,
        codec.DUE: topics.due_checks,
        codec.OBSERVATION: topics.observations,
        codec.REPORT: topics.correlated_reports,
    }[kind]


def _comparable(engine: FoldEngine, outputs: list[Output]) -> list[Any]:
    """Outputs with what may differ removed: a dead letter's time, a traceback's frames."""
    found = []
    for out in outputs:
        value: Any = out.value
        if out.topic == engine.topics.dead_letters:
            value = orjson.loads(value)
            del value["failedAt"]
            if value["reason"] == "processing-error":
                value["error"] = value["error"].splitlines()[-1]
        found.append((out.topic, out.key, out.partition, value))
    return found


def _fold(engine: FoldEngine, store: PartitionStore, part: list[Input], offset: int) -> Any:
    records = [
        ConsumerRecord(_topic(engine, kind), 0, offset + i, 0, 1, key, value, None, 0, 0, ())
        for i, (kind, key, value) in enumerate(part)
    ]
    outputs: list[Output] = []
    markers: dict[str, Any] = {}
    changes = engine.batch.fold(store, records, outputs, markers)  # type: ignore[arg-type]
    store.write(changes, Position(), None, markers)
    return (
        _comparable(engine, outputs),
        {mid: raw for mid, (_, _, raw) in changes.items()},
        {mid: raw for mid, (_, _, raw) in markers.items()},
    )


def _contents(store: PartitionStore) -> list[tuple[Any, Any]]:
    """Every key and value, records without the tag the hot path's side puts on them (and
    without when the store was last written: the wall clock)."""
    return [
        (key, _untagged(value) if key[:1] == RECORD else value)
        for key, value in store._db.items()
        if key != META + b"written"
    ]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(POLICIES)),
    st.sampled_from(STATUS_CHANGE_RECORDS),
    fold_inputs(),
    st.lists(st.integers(min_value=0, max_value=30), max_size=2),
)
def test_the_engine_folds_the_same_with_and_without_the_hot_path(
    policy: str, mode: str, inputs: list[Input], cuts: list[int]
) -> None:
    """In both status-change modes (DELIVERYTRACK_STATUS_CHANGE_RECORD full and changes)."""
    bounds = sorted({0, *cuts, len(inputs)})
    parts = [inputs[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if a < b]
    with (
        engine_on_store(policy, True, mode) as (hot_engine, hot_store),
        engine_on_store(policy, False, mode) as (engine, store),
    ):
        offset = 0
        for part in parts:
            assert _fold(hot_engine, hot_store, part, offset) == _fold(engine, store, part, offset)
            offset += len(part)
        assert _contents(hot_store) == _contents(store)
        hot_stats, stats = hot_engine.stats, engine.stats
        assert stats.hot == 0
        for name in ("events", "applied", "status_changes", "poll_requests", "deletions"):
            assert getattr(hot_stats, name) == getattr(stats, name), name
        assert hot_engine.metrics.status_changes == engine.metrics.status_changes


@pytest.mark.parametrize("mode", STATUS_CHANGE_RECORDS)
def test_the_hot_path_takes_most_inputs_of_a_plain_workload(mode: str) -> None:
    """Guard against a hot path that quietly declines everything (still correct, but slow)."""
    from deliverytrack.models.codec import encode
    from deliverytrack.models.enums import TrackingStatus
    from tests.factories import send_recorded_factory, update_status_factory

    inputs: list[Input] = []
    for n in range(20):
        mid = f"m-{n}"
        inputs.append((codec.SEND, mid.encode(), encode(send_recorded_factory(mid))))
        update = update_status_factory(TrackingStatus.DELIVERED, mid)
        inputs.append((codec.COMMAND, mid.encode(), encode(update)))
    with engine_on_store("default", True, mode) as (engine, store):
        outputs, _, _ = _fold(engine, store, inputs, 0)
        assert engine.stats.hot == len(inputs) and engine.stats.applied == len(inputs)
    changes = [orjson.loads(value) for topic, _, _, value in outputs if "status-changes" in topic]
    assert len(changes) == len(inputs)
    assert all(("record" in c) == (mode == "full") != ("changes" in c) for c in changes)
