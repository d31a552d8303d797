"""The status change's contract: exactly one of ``record`` and ``changes``, and ``changes``
holds only record fields (``DELIVERYTRACK_STATUS_CHANGE_RECORD``)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from deliverytrack.models.codec import encode_status_changed
from deliverytrack.models.events import StatusChanged
from deliverytrack.tables.fold import fold
from tests.factories import send_recorded_factory
from tests.schema_check import problems


def _published() -> dict[str, Any]:
    _, (change, *_) = fold(None, send_recorded_factory("m-1"))
    assert isinstance(change, StatusChanged)
    published: dict[str, Any] = orjson.loads(encode_status_changed(change))
    return published


def test_a_status_change_carries_the_record_or_its_changes() -> None:
    full = _published()
    assert StatusChanged.model_validate(full).record is not None
    slim = {**full, "changes": {"providerId": "solapi", "type": "SMS", "status": "SENT"}}
    del slim["record"]
    change = StatusChanged.model_validate(slim)
    assert change.record is None and change.changes == slim["changes"]
    assert encode_status_changed(change) == orjson.dumps(slim)


@pytest.mark.parametrize("both", [True, False])
def test_both_or_neither_is_refused(both: bool) -> None:
    value = _published()
    if both:
        value["changes"] = {"status": "SENT"}
    else:
        del value["record"]
    with pytest.raises(ValidationError, match="exactly one of record and changes"):
        StatusChanged.model_validate(value)
    assert problems("status-changes", value)  # the published schema says the same


@pytest.mark.parametrize(
    "changes",
    [
        {"statusHistory": []},  # left out on purpose: the envelope is the transition
        {"processedEventIds": ["e-1"]},
        {"notARecordField": 1},
        {"status_updated_at": "2026-11-23T09:00:00Z"},  # the record's names are camelCase
    ],
)
def test_changes_hold_only_record_fields(changes: dict[str, Any]) -> None:
    value = _published()
    del value["record"]
    value["changes"] = {"providerId": "solapi", "type": "SMS", "status": "SENT", **changes}
    with pytest.raises(ValidationError, match="changes may hold"):
        StatusChanged.model_validate(value)
    assert problems("status-changes", value)
