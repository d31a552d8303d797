"""The demo's tally of the status-change topic reads both kinds of status change: with the
record, or with its changes (``DELIVERYTRACK_STATUS_CHANGE_RECORD=changes``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest

from deliverytrack.models.codec import encode_status_changed
from deliverytrack.models.enums import TrackingStatus
from deliverytrack.models.events import StatusChanged
from deliverytrack.models.policy import FoldPolicy
from deliverytrack.streams.dev.demo import Tally
from deliverytrack.tables.fold import replay
from tests.factories import T0, send_recorded_factory, update_status_factory


def _published(mode: str) -> list[dict[str, Any]]:
    """The status changes of two messages (one delivered) as the topic carries them."""
    policy = FoldPolicy(status_change_record=mode)
    messages = [
        [
            send_recorded_factory("m-1", provider_id="sim-a"),
            update_status_factory(TrackingStatus.DELIVERED, "m-1", at=T0 + timedelta(seconds=9)),
        ],
        [send_recorded_factory("m-2", provider_id="sim-b")],
    ]
    published = []
    for events in messages:
        _, emitted = replay(events, None, policy)
        for event in emitted:
            if isinstance(event, StatusChanged):
                published.append(orjson.loads(encode_status_changed(event)))
    return published


@pytest.mark.parametrize("mode", ["full", "changes"])
def test_the_tally_follows_both_kinds_of_status_change(mode: str) -> None:
    tally = Tally()
    for change in _published(mode):
        tally.apply(change)
    assert tally.changes == 3
    assert tally.by_status() == {"DELIVERED": 1, "SENT": 1}
    assert {r["providerId"] for r in tally.records.values()} == {"sim-a", "sim-b"}
    assert tally.delivered_after == {"m-1": 9.0}
    assert tally.open_count() == 1
