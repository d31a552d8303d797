"""Slim status changes (``DELIVERYTRACK_STATUS_CHANGE_RECORD=changes``): what a transition
changed in the record (``tables.changes.record_changes``), and a fold that publishes that
instead of the record and otherwise does exactly what it does with the record."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from deliverytrack.models.codec import decode_record, encode, encode_record, encode_status_changed
from deliverytrack.models.enums import TrackingStatus
from deliverytrack.models.events import StatusChanged
from deliverytrack.models.policy import DEFAULT_POLICY, FoldPolicy
from deliverytrack.models.records import CHANGES_LEFT_OUT
from deliverytrack.tables.changes import record_changes
from deliverytrack.tables.fold import fold
from deliverytrack.tables.hot.batch import HELD_LETTER, FoldInput, Limits, fold_batch
from deliverytrack.tables.hot.codec import load_record
from deliverytrack.tables.hot.fold import STATUS_CHANGE, HotFold
from tests.factories import send_recorded_factory, update_status_factory
from tests.schema_check import problems
from tests.strategies import POLICIES, Input, fold_inputs, with_status_change_record

BEFORE = {
    "messageId": "m",
    "providerId": "p",
    "type": "SMS",
    "status": "SENT",
    "nextCheckAt": "2026-11-23T09:00:30Z",
    "metadata": {"a": 1, "b": [1, 2]},
    "webhooks": [],
    "sequence": 1,
    "statusHistory": [{"status": "SENT"}],
    "processedEventIds": ["e-1"],
}


def test_a_new_record_is_all_changes_but_its_history_and_event_ids() -> None:
    assert record_changes(None, BEFORE) == {
        k: v for k, v in BEFORE.items() if k not in ("statusHistory", "processedEventIds")
    }


def test_a_field_changed_added_and_removed() -> None:
    after = {
        "messageId": "m",
        "providerId": "p",
        "type": "SMS",
        "status": "DELIVERED",  # changed
        "deliveredAt": "2026-11-23T09:00:07Z",  # added
        # nextCheckAt removed
        "metadata": {"b": [1, 2], "a": 1},  # the same object, its keys in another order
        "webhooks": [],
        "sequence": 2,
        "statusHistory": [{"status": "SENT"}, {"status": "DELIVERED"}],
        "processedEventIds": ["e-1", "e-2"],
    }
    changes = record_changes(BEFORE, after)
    assert changes == {
        "providerId": "p",
        "type": "SMS",
        "status": "DELIVERED",
        "deliveredAt": "2026-11-23T09:00:07Z",
        "nextCheckAt": None,
        "sequence": 2,
    }
    # In the record's field order (models.records.TrackingRecord), the removed fields last.
    assert list(changes) == [
        "providerId",
        "type",
        "status",
        "deliveredAt",
        "sequence",
        "nextCheckAt",
    ]
    two_gone = {k: v for k, v in after.items() if k not in ("type", "deliveredAt")}
    assert list(record_changes({**BEFORE, "lastError": {"code": "E"}}, two_gone))[-2:] == [
        "nextCheckAt",
        "lastError",
    ]


def test_values_are_compared_as_json_values() -> None:
    """1, 1.0 and true are equal in Python, not in JSON."""
    for new in (True, 1.0, "1", [1], None):
        after = {**BEFORE, "metadata": {"a": new, "b": [1, 2]}}
        assert record_changes(BEFORE, after)["metadata"] == {"a": new, "b": [1, 2]}
    same = {**BEFORE, "metadata": {"b": [1, 2], "a": 1}, "sequence": 2}
    assert "metadata" not in record_changes(BEFORE, same)
    reordered = {**BEFORE, "metadata": {"a": 1, "b": [2, 1]}}
    assert "metadata" in record_changes(BEFORE, reordered)


def test_provider_type_and_own_webhooks_are_always_carried() -> None:
    hooks = [{"id": "w1", "url": "https://example.com/hook"}]
    before = {**BEFORE, "webhooks": hooks}
    after = {**before, "webhooks": [dict(hooks[0])], "sequence": 2}
    assert record_changes(before, after) == {
        "providerId": "p",
        "type": "SMS",
        "webhooks": hooks,
        "sequence": 2,
    }
    assert "webhooks" not in record_changes(BEFORE, {**BEFORE, "sequence": 2})


def _slim(policy: FoldPolicy = DEFAULT_POLICY) -> FoldPolicy:
    return with_status_change_record(policy, "changes")


def test_the_fold_publishes_the_changes_instead_of_the_record() -> None:
    send = send_recorded_factory("m-1", metadata={"orderId": "1"})
    update = update_status_factory(TrackingStatus.DELIVERED, "m-1", provider_status_code="4000")
    full_record, (full_first, _) = fold(None, send)
    record, (first, _) = fold(None, send, _slim())
    assert record == full_record  # the record itself is the same in both modes
    assert isinstance(first, StatusChanged) and isinstance(full_first, StatusChanged)
    assert first.record is None and first.changes is not None
    assert full_first.record is not None and full_first.changes is None
    expected = orjson.loads(encode_record(full_record))
    for key in CHANGES_LEFT_OUT:
        del expected[key]
    assert first.changes == expected
    new, (change,) = fold(record, update, _slim())
    assert isinstance(change, StatusChanged) and change.changes is not None
    assert change.changes == {
        "providerId": "solapi",
        "type": "SMS",
        "status": "DELIVERED",
        "providerStatusCode": "4000",
        "statusUpdatedAt": orjson.loads(encode(update))["at"],
        "nextCheckAt": None,
        "sequence": 2,
    }
    assert change.model_dump(exclude={"record", "changes"}) == fold(full_record, update)[1][
        0
    ].model_dump(exclude={"record", "changes"})
    value = encode_status_changed(change)
    assert not problems("status-changes", value), value
    assert StatusChanged.model_validate_json(value) == change


def _fold_each(policy: FoldPolicy, inputs: list[Input]) -> list[tuple[Any, ...]]:
    """One batch per input (hot path on): per input, the record before it, its outputs and
    the record after it."""
    hot = HotFold(policy)
    stored: dict[str, bytes] = {}
    steps = []
    limits = Limits(max_input_bytes=4_096, max_record_bytes=3_000)
    for kind, key, value in inputs:
        before = dict(stored)
        result = fold_batch(
            hot,
            [FoldInput(kind, key, value)],
            lambda mid: None if (raw := stored.get(mid)) is None else _load(raw),
            lambda _: None,
            limits,
        )
        for message_id, (_, new, raw) in result.changes.items():
            if new is None:
                stored.pop(message_id, None)
            else:
                assert raw is not None
                stored[message_id] = raw
        outputs = [
            (out_kind, out_key, encode(p) if out_kind == HELD_LETTER else p)
            for _, out_kind, out_key, p, _ in result.outputs
        ]
        steps.append((before, outputs, dict(stored)))
    return steps


def _load(raw: bytes) -> Any:

    return load_record(raw) or decode_record(raw)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(POLICIES)), fold_inputs())
def test_a_slim_fold_does_what_the_full_fold_does_and_publishes_what_changed(
    name: str, inputs: list[Input]
) -> None:
    """Same records, same outputs but the status changes' bodies; each slim change is valid on
    the topic's schema and holds exactly what its input changed in the record."""
    full = _fold_each(with_status_change_record(POLICIES[name], "full"), inputs)
    slim = _fold_each(with_status_change_record(POLICIES[name], "changes"), inputs)
    for (before, full_out, full_after), (_, slim_out, slim_after) in zip(full, slim, strict=True):
        assert full_after == slim_after
        assert [o[:2] for o in full_out] == [o[:2] for o in slim_out]
        first = True
        for (kind, _, with_record), (_, _, with_changes) in zip(full_out, slim_out, strict=True):
            if kind != STATUS_CHANGE:
                assert with_record == with_changes
                continue
            assert not problems("status-changes", with_changes)
            # json, not orjson: it reads integers past 64 bits exactly (metadata may hold one)
            whole, part = json.loads(with_record), json.loads(with_changes)
            record, changes = whole.pop("record"), part.pop("changes")
            assert whole == part  # the same envelope
            if first:  # later ones (held commands applied) start from records not kept here
                raw = before.get(whole["messageId"])
                old = None if raw is None else json.loads(raw)
                assert changes == record_changes(old, record)
                event("a new record" if old is None else "a transition of a stored record")
                _check_patch(old, record, changes)
            first = False


def _check_patch(old: dict[str, Any] | None, new: dict[str, Any], changes: dict[str, Any]) -> None:
    """``changes`` applied to the record before gives the record after (but the fields left
    out), and holds nothing unchanged but the carried fields."""
    patched = {**(old or {}), **changes}
    patched = {k: v for k, v in patched.items() if v is not None and k not in CHANGES_LEFT_OUT}
    assert patched == {k: v for k, v in new.items() if k not in CHANGES_LEFT_OUT}
    for key, value in changes.items():
        if old is not None and key not in ("providerId", "type", "webhooks"):
            assert json.dumps(old.get(key)) != json.dumps(value), key
