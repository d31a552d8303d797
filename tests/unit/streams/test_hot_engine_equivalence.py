"""``tables.hot.batch.fold_batch`` (hot path on) against the engine as it folds today
(``BatchFold.fold``, ``engine.batch``, on a real RocksDB store): the same outputs on the same topics
with the same keys and bytes, the same records and markers written, the same dead letters
(but for the time they were written)."""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deliverytrack.models.codec import decode_marker, decode_record, encode
from deliverytrack.models.correlation import SourceRef
from deliverytrack.models.settings import Settings
from deliverytrack.streams.boundary import Source, dead_letter
from deliverytrack.streams.engine.loop import FoldEngine
from deliverytrack.streams.engine.routing import Output
from deliverytrack.streams.state.store import PartitionStore, Position
from deliverytrack.tables.hot import batch as hot_batch
from deliverytrack.tables.hot import codec
from deliverytrack.tables.hot.batch import FoldInput, Limits, Record, fold_batch
from deliverytrack.tables.hot.fold import HotFold
from tests.strategies import POLICIES, Input, fold_inputs

KEEP = 300


@contextmanager
def engine_on_store(policy: str) -> Iterator[tuple[FoldEngine, PartitionStore]]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), dead_letter_value_bytes=KEEP)
        engine = FoldEngine(settings)
        engine.batch.policy = POLICIES[policy]
        store = PartitionStore(Path(tmp) / "p0.db")
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


def _letter(value: bytes) -> dict[str, Any]:
    letter: dict[str, Any] = orjson.loads(value)
    del letter["failedAt"]
    return letter


def _engine_outputs(engine: FoldEngine, outputs: list[Output]) -> list[Any]:
    return [
        (o.topic, o.key, _letter(o.value) if o.topic == engine.topics.dead_letters else o.value)
        for o in outputs
    ]


def _hot_outputs(
    engine: FoldEngine, inputs: list[Input], offset: int, result: hot_batch.BatchResult
) -> list[Any]:
    """The engine's outputs for what fold_batch returned (the mapping the engine would do)."""
    topics = engine.topics
    same_key = {
        "status-change": topics.status_changes,
        "poll-request": topics.poll_requests,
        "record-deleted": topics.record_deletions,
        "failover-request": topics.failover_requests,
    }
    own_key = {"provider-id-link": topics.provider_ids, "failover-outcome": topics.commands}
    out: list[Any] = []
    for index, kind, key, payload, _ in result.outputs:
        input_kind, input_key, value = inputs[index]
        if kind in same_key:
            out.append((same_key[kind], input_key, payload))
        elif kind in own_key:
            out.append((own_key[kind], key, payload))
        else:
            if kind == hot_batch.HELD_LETTER:
                held = payload.value_base64
                source = Source(
                    payload.topic,
                    payload.partition,
                    payload.offset,
                    base64.b64decode(payload.key_base64) if payload.key_base64 else None,
                    None if held is None else base64.b64decode(held),
                )
                reason, detail = payload.reason, payload.error
            else:
                reason, detail = payload
                source = Source(_topic(engine, input_kind), 0, offset + index, input_key, value)
            if reason == "processing-error":  # a traceback: the frames differ
                detail = detail.splitlines()[-1]
            key, letter = dead_letter(source, reason, detail, codec_time(), KEEP)
            out.append((topics.dead_letters, key, _letter(letter)))
    return out


def _source_of(msg: ConsumerRecord[bytes, bytes]) -> Callable[[], SourceRef]:
    """The engine's ``_source_ref(msg)``: what a held command keeps of its input."""
    value = msg.value
    return lambda: SourceRef(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        value_base64=None if value is None else base64.b64encode(value).decode(),
    )


def codec_time() -> Any:
    from tests.factories import T0

    return T0


def _last_line_of_tracebacks(outputs: list[Any], engine: FoldEngine) -> list[Any]:
    fixed = []
    for topic, key, value in outputs:
        if topic == engine.topics.dead_letters and value["reason"] == "processing-error":
            value = {**value, "error": value["error"].splitlines()[-1]}
        fixed.append((topic, key, value))
    return fixed


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(POLICIES)), fold_inputs(), st.integers(min_value=0, max_value=30))
def test_fold_batch_with_the_hot_path_folds_as_the_engine_does(
    policy: str, inputs: list[Input], cut: int
) -> None:
    with engine_on_store(policy) as (engine, store):
        hot = HotFold(engine.batch.policy)
        limits = Limits(engine.settings.max_input_bytes, engine.router.record_limit)
        stored: dict[str, bytes] = {}
        marks: dict[str, bytes] = {}

        def read(message_id: str) -> Record | None:
            raw = stored.get(message_id)
            if raw is None:
                return None
            return codec.load_record(raw) or decode_record(raw)

        def read_marker(message_id: str) -> Any:
            raw = marks.get(message_id)
            return None if raw is None else decode_marker(raw)

        offset = 0
        for part in (inputs[:cut], inputs[cut:]):
            if not part:
                continue
            records = [
                ConsumerRecord(
                    _topic(engine, kind), 0, offset + i, 0, 1, key, value, None, 0, 0, ()
                )  # type: ignore[arg-type]
                for i, (kind, key, value) in enumerate(part)
            ]
            outputs: list[Output] = []
            markers: dict[str, Any] = {}
            applied = engine.stats.applied
            changes = engine.batch.fold(store, records, outputs, markers)
            items = [
                FoldInput(kind, key, value, _source_of(msg))
                for (kind, key, value), msg in zip(part, records, strict=True)
            ]
            result = fold_batch(hot, items, read, read_marker, limits)

            expected = _last_line_of_tracebacks(_engine_outputs(engine, outputs), engine)
            assert _hot_outputs(engine, part, offset, result) == expected
            assert {m: raw for m, (_, _, raw) in result.changes.items()} == {
                m: raw for m, (_, _, raw) in changes.items()
            }
            assert {m: raw for m, (_, _, raw) in result.markers.items()} == {
                m: raw for m, (_, _, raw) in markers.items()
            }
            assert result.applied == engine.stats.applied - applied

            store.write(changes, Position(), None, markers)
            for message_id, (_, new, raw) in changes.items():
                if new is None:
                    stored.pop(message_id, None)
                else:
                    assert raw is not None
                    stored[message_id] = raw
            for message_id, (_, mark, _) in markers.items():
                if mark is None:
                    marks.pop(message_id, None)
                else:
                    marks[message_id] = encode(mark)
            offset += len(part)
