"""The hot path (``tables/hot``) against today's pydantic path: byte-identical records,
status changes, derived outputs and dead-letter reasons, for every event type, in every record
state the inputs lead to, under several policies.

Both runs go through ``tables.hot.batch.fold_batch``: once with the hot path on, once with it
off (every input then takes the pydantic path, as ``BatchFold.fold_one`` does today;
``tests/unit/streams/test_hot_engine_equivalence.py`` checks that the two agree). Records are
carried between batches as their bytes, the way RocksDB keeps them.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from deliverytrack.models.codec import (
    DecodeError,
    decode_command,
    decode_correlated_report,
    decode_due_check,
    decode_marker,
    decode_observation,
    decode_record,
    decode_send_result,
    encode,
)
from deliverytrack.models.common import JsonObject, UtcDatetime
from deliverytrack.models.policy import FoldPolicy
from deliverytrack.tables.hot import codec, schema
from deliverytrack.tables.hot.batch import (
    HELD_LETTER,
    FoldInput,
    Limits,
    Record,
    fold_batch,
)
from deliverytrack.tables.hot.fold import HotFold
from tests.strategies import (
    POLICIES,
    STATUS_CHANGE_RECORDS,
    Input,
    fold_inputs,
    with_status_change_record,
)

LIMITS = Limits(max_input_bytes=4_096, max_record_bytes=3_000)
EQUIVALENCE = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
PYDANTIC_DECODERS = {
    codec.SEND: decode_send_result,
    codec.COMMAND: decode_command,
    codec.DUE: decode_due_check,
    codec.OBSERVATION: decode_observation,
    codec.REPORT: decode_correlated_report,
}


def _source(index: int, value: bytes | None) -> Any:
    from deliverytrack.models.correlation import SourceRef

    return lambda: SourceRef(
        topic="t",
        partition=0,
        offset=index,
        value_base64=None if value is None else base64.b64encode(value).decode(),
    )


def fold_all(
    policy: FoldPolicy, inputs: list[Input], cuts: list[int], hot_on: bool
) -> tuple[list[Any], dict[str, bytes], dict[str, bytes], int]:
    """(what each batch did, records, markers at the end, inputs folded on the hot path)."""
    hot = HotFold(policy)
    hot.enabled = hot_on
    stored: dict[str, bytes] = {}
    marks: dict[str, bytes] = {}

    def read(message_id: str) -> Record | None:
        raw = stored.get(message_id)
        if raw is None:
            return None
        record = codec.load_record(raw) if hot_on else None
        return record if record is not None else decode_record(raw)

    def read_marker(message_id: str) -> Any:
        raw = marks.get(message_id)
        return None if raw is None else decode_marker(raw)

    batches: list[Any] = []
    hot_inputs = 0
    items = [
        FoldInput(kind, key, value, _source(i, value))
        for i, (kind, key, value) in enumerate(inputs)
    ]
    for start, end in zip([0, *cuts], [*cuts, len(items)], strict=True):
        result = fold_batch(hot, items[start:end], read, read_marker, LIMITS)
        hot_inputs += result.hot
        outputs = [
            (i, kind, key, encode(payload) if kind == HELD_LETTER else payload, status)
            for i, kind, key, payload, status in result.outputs
        ]
        changes = {}
        for message_id, (_, new, raw) in sorted(result.changes.items()):
            changes[message_id] = raw
            if new is None:
                stored.pop(message_id, None)
            else:
                assert raw is not None
                stored[message_id] = raw
        markers = {}
        for message_id, (_, mark, raw) in sorted(result.markers.items()):
            markers[message_id] = raw
            if mark is None:
                marks.pop(message_id, None)
            else:
                assert raw is not None
                marks[message_id] = raw
        batches.append((outputs, changes, markers, result.applied))
    return batches, stored, marks, hot_inputs


@st.composite
def runs(draw: st.DrawFn) -> tuple[str, str, list[Input], list[int]]:
    inputs = draw(fold_inputs())
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(inputs) - 1)), max_size=2))))
    cuts = [c for c in cuts if 0 < c < len(inputs)]
    name = draw(st.sampled_from(sorted(POLICIES)))
    return name, draw(st.sampled_from(STATUS_CHANGE_RECORDS)), inputs, cuts


@EQUIVALENCE
@given(runs())
def test_the_hot_path_writes_what_the_pydantic_path_writes(
    run: tuple[str, str, list[Input], list[int]],
) -> None:
    """In both status-change modes: with the record, or with its changes."""
    name, mode, inputs, cuts = run
    policy = with_status_change_record(POLICIES[name], mode)
    hot = fold_all(policy, inputs, cuts, hot_on=True)
    cold = fold_all(policy, inputs, cuts, hot_on=False)
    event(f"hot path share: {round(hot[3] / len(inputs), 1)}")
    event(f"status changes: {mode}")
    assert hot[:3] == cold[:3]


# --- the decoders ------------------------------------------------------------------------------

json_texts = st.one_of(
    st.just(b"1e400"),
    st.just(b"18446744073709551616"),
    st.just(b"-9223372036854775809"),
    st.integers().map(lambda n: str(n).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).encode()),
    st.from_regex(rb"\A-?[0-9]{1,25}(\.[0-9]{1,25})?([eE][-+]?[0-9]{1,3})?\Z"),
)


@settings(max_examples=500)
@given(json_texts)
def test_numbers_in_free_form_json_read_and_write_as_pydantic_does(text: bytes) -> None:
    """orjson and pydantic read a JSON number to the same value and write it the same way,
    whenever the hot path's JSON check accepts it (it declines what orjson cannot read, and
    floats that may be integers pydantic reads beyond 64 bits)."""
    raw = b'{"n":' + text + b"}"
    adapter: TypeAdapter[Any] = TypeAdapter(JsonObject)
    try:
        loaded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    if schema.check_json_object(loaded) is schema.BAD:
        return
    model = adapter.validate_json(raw)
    assert model == loaded
    assert adapter.dump_json(model) == orjson.dumps(loaded)


_digits_or_not = st.sampled_from("0123456789" * 6 + " +-.a\u0663T:Z")


@st.composite
def _time_shaped(draw: st.DrawFn) -> str:
    """The canonical shapes' separators in place, anything (mostly digits) elsewhere."""
    text = list(draw(st.sampled_from(["0000-00-00T00:00:00Z", "0000-00-00T00:00:00.000000Z"])))
    for i, char in enumerate(text):
        if char == "0":
            text[i] = draw(_digits_or_not)
    return "".join(text)


time_texts = st.one_of(
    _time_shaped(),
    st.from_regex(
        r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,7})?(Z|z|\+00:00|"
        r"-00:00|\+09:00)?\Z"
    ),
    st.datetimes(
        min_value=__import__("datetime").datetime(1960, 1, 1),
        max_value=__import__("datetime").datetime(9999, 1, 1),
    ).map(lambda d: d.isoformat() + "Z"),
    st.text(max_size=30),
    st.sampled_from(
        [
            "2026-11-23T09:00:00Z",
            "2026-11-23T09:00:00.000000Z",
            "2026-11-23T09:00:00.5Z",
            "2026-02-29T00:00:00Z",
            "2028-02-29T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T23:59:60Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999Z",
            "8999-12-31T23:59:59.999999Z",
            "9000-01-01T00:00:00Z",
            "2026-11-23T09:00:00.1234567Z",
            "20261123T090000.123Z",
            "2026-11-23 09:00:00Z",
            "2026-11-23T09:00Z",
            "2026-1١-23T09:00:00Z",
        ]
    ),
)


@settings(max_examples=1000)
@given(time_texts)
def test_a_time_text_is_accepted_only_as_pydantic_accepts_it(text: str) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(UtcDatetime)
    canonical = schema.utc_text(text)
    if canonical is schema.BAD:
        return
    moment = adapter.validate_json(orjson.dumps(text))
    assert adapter.dump_json(moment) == orjson.dumps(canonical)
    assert schema.parse_utc(canonical) == moment


@settings(max_examples=600, deadline=None)
@given(fold_inputs(max_size=1))
def test_an_input_the_hot_decoder_takes_decodes_with_pydantic_to_the_same_event(
    inputs: list[Input],
) -> None:
    """Whatever the hot decoder accepts, the pydantic decoder accepts, to an event whose
    canonical JSON is the hot decoder's payload for every field the model has."""
    ((kind, _, value),) = inputs
    payload = codec.decode(kind, value)
    try:
        model = PYDANTIC_DECODERS[kind](value)
    except DecodeError:
        assert payload is None
        return
    if payload is None:
        return
    expected = orjson.loads(encode(model))
    fields = codec.SPECS[kind][1].order
    assert {k: v for k, v in payload.items() if k in fields and v is not None} == expected


# --- coverage: the hot path is taken ----------------------------------------------------------


def _each_kind_sequence() -> Iterator[tuple[str, bytes]]:
    from tests.factories import T0, send_recorded_factory

    send = send_recorded_factory("m-a", requested_at=T0)
    yield codec.SEND, encode(send)
    due = T0.replace(second=30)
    yield (
        codec.DUE,
        orjson.dumps(
            {
                "eventId": "d1",
                "eventType": "DueCheckIssued",
                "messageId": "m-a",
                "dueAt": due.isoformat().replace("+00:00", "Z"),
                "issuedAt": "2026-11-23T09:00:31Z",
            }
        ),
    )
    yield (
        codec.OBSERVATION,
        orjson.dumps(
            {
                "eventId": "o1",
                "messageId": "m-a",
                "checkSeq": 1,
                "providerId": "solapi",
                "outcome": "result",
                "observedAt": "2026-11-23T09:00:32Z",
                "result": {"status": "SENT"},
            }
        ),
    )
    yield (
        codec.REPORT,
        orjson.dumps(
            {
                "eventId": "r1",
                "messageId": "m-a",
                "report": {
                    "eventId": "r1",
                    "providerId": "solapi",
                    "providerMessageId": "pm-m-a",
                    "status": "DELIVERED",
                    "receivedAt": "2026-11-23T09:01:00Z",
                },
            }
        ),
    )
    yield (
        codec.COMMAND,
        orjson.dumps(
            {
                "eventId": "u1",
                "eventType": "UpdateStatus",
                "messageId": "m-a",
                "status": "CLICKED",
                "at": "2026-11-23T09:02:00Z",
            }
        ),
    )


def test_the_common_inputs_take_the_hot_path_and_change_the_record() -> None:
    items = [FoldInput(kind, b"m-a", value) for kind, value in _each_kind_sequence()]
    hot = HotFold(FoldPolicy())
    result = fold_batch(hot, items, lambda _: None, lambda _: None, LIMITS)
    assert result.hot == len(items)
    assert result.applied == len(items)
    kinds = Counter(kind for _, kind, _, _, _ in result.outputs)
    assert kinds == {"status-change": 3, "provider-id-link": 1, "poll-request": 1}
    cold = HotFold(FoldPolicy())
    cold.enabled = False
    reference = fold_batch(cold, items, lambda _: None, lambda _: None, LIMITS)
    assert reference.hot == 0
    assert result.outputs == reference.outputs
    assert {k: v[2] for k, v in result.changes.items()} == {
        k: v[2] for k, v in reference.changes.items()
    }


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_a_stored_record_reads_back_hot_with_the_same_bytes(name: str) -> None:
    items = [FoldInput(kind, b"m-a", value) for kind, value in _each_kind_sequence()]
    cold = HotFold(POLICIES[name])
    cold.enabled = False
    result = fold_batch(cold, items, lambda _: None, lambda _: None, LIMITS)
    ((_, record, raw),) = result.changes.values()
    assert raw is not None
    hot = codec.load_record(raw)
    assert hot is not None and hot.json == raw
    assert codec.to_model(hot) == record
    # Anything but the exact bytes the models write is left to them.
    data = orjson.loads(raw)
    for key, value in (("attemptCount", 1.0), ("unknown", 1), ("toHash", None)):
        assert codec.load_record(orjson.dumps({**data, key: value})) is None
    spelt = {**data, "requestedAt": data["requestedAt"].replace("Z", "+00:00")}
    assert codec.load_record(orjson.dumps(spelt)) is None
    reordered = dict(reversed(list(data.items())))
    assert codec.load_record(orjson.dumps(reordered)) is None
    assert codec.load_record(raw + b" ") is None


# --- cases the random inputs reach rarely ---------------------------------------------------------


def _send(**extra: Any) -> Input:
    from tests.factories import send_recorded_factory

    event = send_recorded_factory("m-a", event_id="s-1", **extra)
    return (codec.SEND, b"m-a", encode(event))


def _command(payload: dict[str, Any]) -> Input:
    return (codec.COMMAND, b"m-a", orjson.dumps({"messageId": "m-a", **payload}))


def _update(i: int, status: str, **extra: Any) -> Input:
    return _command(
        {
            "eventId": f"u-{i}",
            "eventType": "UpdateStatus",
            "status": status,
            "at": f"2026-11-23T09:{i // 60:02d}:{i % 60:02d}Z",
            **extra,
        }
    )


def _both(policy: FoldPolicy, inputs: list[Input], limits: Limits = LIMITS) -> Any:
    global LIMITS
    saved, LIMITS = LIMITS, limits
    try:
        hot = fold_all(policy, inputs, [], hot_on=True)
        cold = fold_all(policy, inputs, [], hot_on=False)
    finally:
        LIMITS = saved
    assert hot[:3] == cold[:3]
    return hot


def test_a_long_lived_record_remembers_the_last_64_event_ids_on_both_paths() -> None:
    inputs = [_send()] + [_update(i, "SENT", providerStatusCode=f"c{i}") for i in range(1, 80)]
    batches, stored, _, hot_inputs = _both(FoldPolicy(), inputs)
    assert hot_inputs == len(inputs)
    remembered = orjson.loads(stored["m-a"])["processedEventIds"]
    assert len(remembered) == 64 and remembered[-1] == "u-79"


def test_failover_requests_and_held_commands_take_the_pydantic_path_with_the_same_result() -> None:
    from deliverytrack.models.policy import ApiFailoverPolicy

    policy = FoldPolicy(api_failover=ApiFailoverPolicy(enabled=True), command_hold_ms=60_000)
    held_for_b = {
        "eventId": "u-b",
        "eventType": "UpdateStatus",
        "messageId": "m-b",
        "status": "DELIVERED",
        "at": "2026-11-23T09:00:00Z",
    }
    expiry_of_b = {
        "eventId": "x-1",
        "eventType": "RecordExpiryDue",
        "messageId": "m-b",
        "expireAt": "2026-11-23T09:01:00Z",
        "issuedAt": "2026-11-23T09:05:00Z",
    }
    inputs = [
        _update(1, "SENT", providerStatusMessage="queued"),  # held: no send result yet
        _send(
            type="ALIMTALK",
            failover={"enabled": True, "fallbackChannel": "sms", "fallbackContent": "hi"},
            warnings=({"code": "FAILOVER_PARTIAL_PROVIDER"},),
        ),
        _update(2, "FAILED", providerStatusCode="3104"),  # a failover request
        _update(3, "FAILED"),
        (codec.COMMAND, b"m-b", orjson.dumps(held_for_b)),
        (codec.DUE, b"m-b", orjson.dumps(expiry_of_b)),  # the held command's dead letter
    ]
    batches, _, _, hot_inputs = _both(policy, inputs)
    kinds = [kind for _, kind, _, _, _ in batches[0][0]]
    assert "failover-request" in kinds and "held-letter" in kinds
    assert hot_inputs < len(inputs)


def test_size_limits_refuse_the_same_inputs_on_both_paths() -> None:
    inputs = [
        _send(metadata={"blob": "x" * 500}),
        _update(1, "DELIVERED", details={"blob": "y" * 900}),
        _update(2, "CLICKED", details={"blob": "z" * 2_600}),
    ]
    batches, _, _, _ = _both(FoldPolicy(), inputs, Limits(2_500, 2_000))
    reasons = [payload[0] for _, kind, _, payload, _ in batches[0][0] if kind == "refused"]
    assert reasons == ["record-too-large", "too-large"]


def test_an_overflowing_date_is_a_processing_error_on_both_paths() -> None:
    from deliverytrack.models.retention import RetentionPolicy

    policy = FoldPolicy(retention=RetentionPolicy(tenant_override_days={"telecomMetadata": 3e6}))
    batches, _, _, _ = _both(policy, [_send()])
    ((_, kind, _, (reason, _), _),) = batches[0][0]
    assert (kind, reason) == ("refused", "processing-error")
