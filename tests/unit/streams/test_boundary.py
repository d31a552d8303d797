"""The per-input boundary (streams/boundary.py) on the engine's batch functions, with a real
RocksDB and no broker. Properties, over hostile and valid inputs alike:

- a batch never raises for what its inputs are: each input is kept or dead-lettered;
- what the engine writes, it reads back: every record, correlation state and marker a batch
  produces decodes to the same value, from the batch's JSON and from RocksDB, and through the
  changelog restore path; every output decodes with its topic's decoder;
- a dead letter is bounded whatever the input, and keeps the bytes it says it keeps;
- an input that fails leaves nothing of itself behind (the batch is what the other inputs
  alone would have made).
"""

from __future__ import annotations

import base64
import hashlib
import string
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest.mock import patch

import orjson
import pytest
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deliverytrack.models.codec import (
    StatusChangedAdapter,
    decode_command,
    decode_correlated_report,
    decode_correlation_state,
    decode_link_or_expiry,
    decode_marker,
    decode_poll_request,
    decode_record,
    encode,
)
from deliverytrack.models.events import DeadLetter
from deliverytrack.models.settings import Settings
from deliverytrack.streams.boundary import MAX_KEY_BYTES, Source, dead_letter
from deliverytrack.streams.engine.changelog import CORRELATION_PREFIX, MARKER_PREFIX, restore_one
from deliverytrack.streams.engine.loop import FoldEngine
from deliverytrack.streams.engine.routing import Output
from deliverytrack.streams.state.store import PartitionStore, Position
from deliverytrack.tables.deletion import fold_marked
from deliverytrack.tables.hot import batch as hot_batch_module
from deliverytrack.tables.hot.fold import HotFold
from tests.factories import T0, as_model

KEEP = 1_024

# --- strategies ----------------------------------------------------------------------------

ids = st.text(min_size=1, max_size=40) | st.sampled_from(["m-1", "m-2", "x" * 512, "\x00z"])
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    return st.recursive(
        json_scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=max_leaves,
    )


def deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"n": value}
    return value


objects = st.dictionaries(st.text(max_size=8), json_values()) | st.integers(20, 260).map(
    lambda d: {"deep": deep(d)}
)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)
times = (
    st.datetimes(
        min_value=datetime(1969, 12, 31), max_value=datetime(9999, 12, 31), timezones=offsets
    ).map(lambda d: d.isoformat())
    | st.sampled_from(["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "2026-11-23"])
    | st.just(T0.isoformat())
)
statuses = st.sampled_from(
    ["QUEUED", "PENDING", "SENDING", "SENT", "DELIVERED", "FAILED", "CLICKED", "UNKNOWN", "X"]
)


@st.composite
def send_results(draw: st.DrawFn, message_id: str) -> dict[str, Any]:
    value: dict[str, Any] = {
        "eventId": draw(ids),
        "messageId": message_id,
        "providerId": draw(st.sampled_from(["solapi", "p" * 512])),
        "providerMessageId": draw(st.none() | ids | st.just("q" * 513)),
        "type": draw(st.sampled_from(["SMS", "LMS", "ALIMTALK", "FAX"])),
        "to": draw(st.sampled_from(["01012345678", "+821012345678", ""])),
        "requestedAt": draw(times),
        "schemaVersion": 1,
    }
    for name, strategy in (
        ("metadata", objects),
        ("scheduledAt", times),
        ("expiresAt", times),
        ("warnings", st.lists(st.fixed_dictionaries({"code": ids, "details": objects}))),
        ("webhooks", st.lists(st.fixed_dictionaries({"id": ids, "url": st.text()}), max_size=1)),
        ("customFields", st.dictionaries(st.text(max_size=5), st.text(max_size=5))),
        ("extraField", json_values()),
    ):
        if draw(st.booleans()):
            value[name] = draw(strategy)
    return value


@st.composite
def commands(draw: st.DrawFn, message_id: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(["UpdateStatus", "CancelMessage", "StopTracking", "purge"]))
    value: dict[str, Any] = {
        "eventType": kind,
        "eventId": draw(ids),
        "messageId": message_id,
        "at": draw(times),
        "schemaVersion": 1,
    }
    if kind == "UpdateStatus":
        value["status"] = draw(statuses)
        if draw(st.booleans()):
            value["details"] = draw(objects)
        if draw(st.booleans()):
            value["error"] = {"code": draw(ids), "message": draw(st.text(max_size=10))}
    return value


@st.composite
def reports(draw: st.DrawFn, provider_message_id: str) -> dict[str, Any]:
    value: dict[str, Any] = {
        "eventId": draw(ids),
        "providerId": "solapi",
        "providerMessageId": provider_message_id,
        "status": draw(statuses),
        "receivedAt": draw(times),
        "schemaVersion": 1,
    }
    if draw(st.booleans()):
        value["raw"] = draw(objects)
    if draw(st.booleans()):
        value["deliveredAt"] = draw(times)
    return value


def as_bytes(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # nested past orjson's own limit: the bytes a hostile producer could send
        return b'{"n":' * 300 + b"1" + b"}" * 300


garbage = st.binary(max_size=200) | st.sampled_from(
    [b"", b"null", b"[]", b'{"eventId": 1}', b'{"a": NaN}', b"\xff\xfe", b"{" + b"x" * 5000]
)


@st.composite
def fold_inputs(draw: st.DrawFn) -> list[tuple[str, bytes | None, bytes | None]]:
    """(topic kind, key, value) of a batch of fold inputs for a few messageIds."""
    out: list[tuple[str, bytes | None, bytes | None]] = []
    for _ in range(draw(st.integers(1, 12))):
        mid = draw(st.sampled_from(["m-1", "m-2", "m-3"]))
        kind = draw(st.sampled_from(["send", "send", "command", "garbage"]))
        key = draw(st.just(mid.encode()) | st.just(mid.encode()) | st.none() | st.binary())
        if kind == "send":
            out.append(("send", key, as_bytes(draw(send_results(mid)))))
        elif kind == "command":
            out.append(("command", key, as_bytes(draw(commands(mid)))))
        else:
            out.append((draw(st.sampled_from(["send", "command"])), key, draw(garbage | st.none())))
    return out


@st.composite
def correlation_inputs(draw: st.DrawFn) -> list[tuple[str, bytes | None, bytes | None]]:
    out: list[tuple[str, bytes | None, bytes | None]] = []
    for _ in range(draw(st.integers(1, 10))):
        pmid = draw(st.sampled_from(["r-1", "r-2"]))
        key = f"solapi:{pmid}".encode()
        choice = draw(st.sampled_from(["report", "report", "link", "garbage"]))
        if choice == "report":
            out.append(("report", key, as_bytes(draw(reports(pmid)))))
        elif choice == "link":
            link = {
                "eventType": "ProviderIdLinked",
                "eventId": draw(ids),
                "providerId": "solapi",
                "providerMessageId": pmid,
                "messageId": draw(ids),
                "linkedAt": draw(times),
                "schemaVersion": 1,
            }
            out.append(("link", key, as_bytes(link)))
        else:
            out.append(("report", draw(st.just(key) | st.none()), draw(garbage)))
    return out


# --- harness --------------------------------------------------------------------------------


@contextmanager
def engine_on_store() -> Iterator[tuple[FoldEngine, PartitionStore]]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), dead_letter_value_bytes=KEEP)
        engine = FoldEngine(settings)
        store = PartitionStore(Path(tmp) / "p0.db")
        engine.partitions.attach(0, store)
        try:
            yield engine, store
        finally:
            store.close()


def consumed(
    engine: FoldEngine, inputs: list[tuple[str, bytes | None, bytes | None]]
) -> list[ConsumerRecord[bytes, bytes]]:
    topics = engine.topics
    topic_of = {
        "send": topics.send_results,
        "command": topics.commands,
        "report": topics.provider_webhooks,
        "link": topics.provider_ids,
    }
    return [
        ConsumerRecord(topic_of[kind], 0, offset, 0, 1, key, value, None, 0, 0, ())  # type: ignore[arg-type]
        for offset, (kind, key, value) in enumerate(inputs)
    ]


def check_outputs(engine: FoldEngine, outputs: list[Output]) -> int:
    """Every output decodes with its topic's decoder; returns the number of dead letters."""
    topics = engine.topics
    letters = 0
    for out in outputs:
        if out.topic == topics.dead_letters:
            letters += 1
            assert len(out.value) < 3 * KEEP + 10_000
            assert out.key is None or len(out.key) <= MAX_KEY_BYTES
            DeadLetter.model_validate_json(out.value)
        elif out.topic == topics.status_changes:
            change = StatusChangedAdapter.validate_json(out.value)
            assert decode_record(encode(change.record)) == change.record
        elif out.topic == topics.poll_requests:
            decode_poll_request(out.value)
        elif out.topic == topics.provider_ids:
            decode_link_or_expiry(out.value)
        elif out.topic == topics.correlated_reports:
            decode_correlated_report(out.value)
        elif out.topic == topics.commands:
            decode_command(out.value)
    return letters


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(fold_inputs())
def test_a_fold_batch_keeps_or_dead_letters_every_input_and_reads_back_what_it_writes(
    inputs: list[tuple[str, bytes | None, bytes | None]],
) -> None:
    with engine_on_store() as (engine, store):
        outputs: list[Output] = []
        markers: dict[str, Any] = {}
        records = consumed(engine, inputs)
        changes = engine.batch.fold(engine.store(0), records, outputs, markers)
        check_outputs(engine, outputs)
        for _, after, raw in changes.values():
            assert (raw is None) == (after is None)
            if raw is not None:
                assert decode_record(raw) == as_model(after)
        for _, (_, mark, raw) in markers.items():
            assert (raw is None) == (mark is None)
            if raw is not None:
                assert decode_marker(raw) == mark
        store.write(changes, Position(), None, markers)
        store.cache.clear()
        for mid, (_, after, _) in changes.items():
            assert store.get(mid) == as_model(after)
        for mid, (_, mark, _) in markers.items():
            assert store.get_marker(mid) == mark
        # The changelog restore path reads the same values back.
        restored: dict[str, Any] = {}
        for offset, (mid, (_, _, raw)) in enumerate(changes.items()):
            msg = ConsumerRecord("cl", 0, offset, 0, 1, mid.encode(), raw, None, 0, 0, ())
            restore_one(msg, store, Position(), restored, {}, {})  # type: ignore[arg-type]
        assert {mid: as_model(change[1]) for mid, change in restored.items()} == {
            mid: as_model(change[1]) for mid, change in changes.items()
        }
        for mid, (_, _, raw) in markers.items():
            msg = ConsumerRecord(
                "cl", 0, 0, 0, 1, MARKER_PREFIX + mid.encode(), raw, None, 0, 0, ()
            )
            marks: dict[str, Any] = {}
            restore_one(msg, store, Position(), {}, {}, marks)  # type: ignore[arg-type]


@SETTINGS
@given(correlation_inputs())
def test_a_correlation_batch_keeps_or_dead_letters_every_input_and_reads_back_its_state(
    inputs: list[tuple[str, bytes | None, bytes | None]],
) -> None:
    with engine_on_store() as (engine, store):
        outputs: list[Output] = []
        states = engine.batch.correlate(engine.store(0), consumed(engine, inputs), outputs)
        check_outputs(engine, outputs)
        for key, (_, after, raw) in states.items():
            assert (raw is None) == (after is None)
            if raw is not None:
                assert decode_correlation_state(raw) == after
                msg = ConsumerRecord(
                    "cl", 0, 0, 0, 1, CORRELATION_PREFIX + key.encode(), raw, None, 0, 0, ()
                )
                restore_one(msg, store, Position(), {}, {}, {})  # type: ignore[arg-type]
        store.write({}, Position(), states, None)
        for key, (_, after, _) in states.items():
            assert store.get_correlation(key) == after


@SETTINGS
@given(fold_inputs(), st.integers(min_value=0))
def test_a_failing_input_leaves_nothing_behind(
    inputs: list[tuple[str, bytes | None, bytes | None]], pick: int
) -> None:
    """The batch with an input that fails after its fold ran is the batch without that input,
    plus one dead letter: nothing of the failed input's work is kept."""
    poisoned = pick % len(inputs)
    kind, key, value = inputs[poisoned]
    if value is not None and len(value) > 1:
        value = bytes(bytearray(value))  # its own object: the one input the wrappers poison
    inputs = [*inputs[:poisoned], (kind, key, value), *inputs[poisoned + 1 :]]
    with engine_on_store() as (engine, _):
        kept = [item for n, item in enumerate(inputs) if n != poisoned]
        clean_out: list[Output] = []
        clean = engine.batch.fold(engine.store(0), consumed(engine, kept), clean_out, {})

    def fold_then_fail(*args: Any, source: Any = None) -> Any:
        result = fold_marked(*args, source=source)
        if source is not None and source().offset == poisoned:
            raise RuntimeError("boom")
        return result

    with engine_on_store() as (engine, _):
        # The poisoned input fails after its fold ran, on the hot path or on the models'.
        hot = engine.batch.hot
        decoded: list[Any] = []

        def decode(kind: str, raw: bytes | None) -> Any:
            event = HotFold.decode(hot, kind, raw)
            if raw is value and event is not None:
                decoded.append(event)
            return event

        def hot_fold_then_fail(record: Any, kind: str, event: Any) -> Any:
            step = HotFold.fold(hot, record, kind, event)
            if any(event is poisoned_event for poisoned_event in decoded):
                raise RuntimeError("boom")
            return step

        with (
            patch.object(hot_batch_module, "fold_marked", fold_then_fail),
            patch.object(hot, "decode", decode),
            patch.object(hot, "fold", hot_fold_then_fail),
        ):
            out: list[Output] = []
            dirty = engine.batch.fold(engine.store(0), consumed(engine, inputs), out, {})
    assert {m: c[2] for m, c in dirty.items()} == {m: c[2] for m, c in clean.items()}
    assert len(out) == len(clean_out) + 1
    assert [o.topic for o in out].count(engine.topics.dead_letters) == 1 + [
        o.topic for o in clean_out
    ].count(engine.topics.dead_letters)


# --- the dead letter itself -----------------------------------------------------------------


@given(
    st.binary(max_size=5_000) | st.none(),
    st.binary(max_size=3_000) | st.none(),
    st.text(max_size=10_000),
    st.integers(min_value=0, max_value=2_000),
)
def test_a_dead_letter_is_bounded_and_keeps_what_it_says(
    value: bytes | None, key: bytes | None, detail: str, keep: int
) -> None:
    source = Source("t", 3, 7, key, value)
    out_key, raw = dead_letter(source, "r", detail, datetime(2026, 1, 1, tzinfo=UTC), keep)
    assert len(raw) < 3 * keep + 4 * MAX_KEY_BYTES + 4 * 4_000 + 1_000
    letter = DeadLetter.model_validate_json(raw)
    assert out_key is None or len(out_key) <= MAX_KEY_BYTES
    if value is None:
        assert letter.value_base64 is None and letter.value_size is None
    else:
        kept = base64.b64decode(letter.value_base64 or "")
        assert kept == value[:keep]
        assert letter.value_size == len(value)
        assert letter.value_sha256 == hashlib.sha256(value).hexdigest()
        assert bool(letter.value_truncated) == (len(value) > keep)
    if key is not None and len(key) <= MAX_KEY_BYTES:
        assert out_key == key and base64.b64decode(letter.key_base64 or "") == key


@pytest.mark.parametrize("size", [0, 1, 65_536, 1_000_000, 2_500_000])
def test_a_dead_letter_of_a_big_value_fits_the_broker(size: int) -> None:
    value = b"{" + b"x" * size
    _, raw = dead_letter(Source("t", 0, 0, b"k", value), "r", "e", T0, 65_536)
    assert len(raw) < 200_000


def test_printable_keys_are_kept_as_they_are() -> None:
    key = string.printable.encode()
    out_key, _ = dead_letter(Source("t", 0, 0, key, b"v"), "r", "e", T0, 10)
    assert out_key == key
