"""Due-index keys sort by due time and bound scans to what is due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from deliverytrack.models.enums import TrackingStatus
from deliverytrack.tables.due_index import (
    due_index_change,
    due_key,
    epoch_ms,
    parse_due_key,
    upper_bound,
)
from deliverytrack.tables.fold import fold
from tests.factories import T0, send_recorded_factory, update_status_factory

moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
ids = st.text(min_size=1, max_size=20)


@given(moments, ids, moments, ids)
def test_keys_sort_by_due_time(a: datetime, id_a: str, b: datetime, id_b: str) -> None:
    if epoch_ms(a) < epoch_ms(b):
        assert due_key(a, id_a) < due_key(b, id_b)


@given(moments, ids)
def test_key_round_trip_and_bound(moment: datetime, message_id: str) -> None:
    key = due_key(moment, message_id)
    assert parse_due_key(key) == (epoch_ms(moment), message_id)
    assert key < upper_bound(moment)  # due at now is due
    assert key >= upper_bound(moment - timedelta(milliseconds=1))  # not due a ms earlier


def test_epoch_ms_is_exact() -> None:
    assert epoch_ms(datetime(1970, 1, 1, 0, 0, 0, 999, tzinfo=UTC)) == 0
    assert epoch_ms(datetime(2026, 1, 1, tzinfo=UTC)) == 1_767_225_600_000


def test_due_index_follows_the_record() -> None:
    record, _ = fold(None, send_recorded_factory())
    removed, added = due_index_change(None, record)
    assert removed is None and added == due_key(T0 + timedelta(seconds=30), "msg-1")
    delivered, _ = fold(record, update_status_factory(TrackingStatus.DELIVERED))
    removed, added = due_index_change(record, delivered)
    assert removed == due_key(T0 + timedelta(seconds=30), "msg-1") and added is None
    assert due_index_change(record, record) == (None, None)
