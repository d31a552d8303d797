"""Aggregates and range covers: counters follow records exactly; covers are exact."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from deliverytrack.models.enums import TrackingStatus
from deliverytrack.models.events import MessageEvent
from deliverytrack.models.records import TrackingRecord
from deliverytrack.tables.aggregates import (
    DAY_MS,
    GRANULARITIES,
    MINUTE_MS,
    TOTAL,
    Counter,
    _rows,
    aggregate_delta,
    bucket_prefix,
    contribution,
    cover,
    parse_row_key,
    parse_time_key,
    requested_key,
    time_key,
    updated_key,
)
from deliverytrack.tables.fold import fold
from tests.factories import T0, sent_record_factory, update_status_factory
from tests.unit.tables.test_fold_properties import message_events

S = TrackingStatus


def test_a_new_record_counts_once_per_granularity() -> None:
    record = sent_record_factory(requested_at=T0 + timedelta(hours=5, minutes=7, seconds=3))
    delta = aggregate_delta({"m-1": (None, record)})
    assert len(delta) == 4  # total, day, hour, minute
    granularities = sorted(parse_row_key(key)[0] for key in delta)
    assert granularities == sorted([TOTAL, *(g for g, _ in GRANULARITIES)])
    for key, counter in delta.items():
        granularity, bucket, dims = parse_row_key(key)
        assert dims == ("solapi", "SMS", "SENT")
        assert counter == Counter(1, 0, 0)
        if granularity != TOTAL:
            size = dict(GRANULARITIES)[granularity]
            assert bucket % size == 0 and bucket <= record.requested_at.timestamp() * 1000


def test_a_transition_moves_the_count_and_adds_the_delivery_time() -> None:
    old = sent_record_factory()
    new, _ = fold(
        old,
        update_status_factory(
            S.DELIVERED, sent_at=T0, delivered_at=T0 + timedelta(seconds=7), at=T0
        ),
    )
    assert new is not None
    delta = aggregate_delta({"m-1": (old, new)})
    by_status: dict[str, Counter] = {}
    for key, counter in delta.items():
        granularity, _, dims = parse_row_key(key)
        if granularity == TOTAL:
            by_status[dims[2]] = counter
    assert by_status == {"SENT": Counter(-1, 0, 0), "DELIVERED": Counter(1, 7000, 1)}


def test_unchanged_dimensions_net_to_nothing_and_deletes_subtract() -> None:
    record = sent_record_factory()
    assert aggregate_delta({"m-1": (record, record)}) == {}
    removed = aggregate_delta({"m-1": (record, None)})
    assert removed and all(c == Counter(-1, 0, 0) for c in removed.values())


def test_counter_round_trips_through_bytes() -> None:
    counter = Counter(3, -12_345, 2)
    assert Counter.unpack(counter.pack()) == counter
    assert Counter().is_zero() and not counter.is_zero()


def test_index_keys_sort_by_time_then_message_id() -> None:
    early, late = (
        sent_record_factory("b", requested_at=T0),
        sent_record_factory("a", requested_at=T0 + timedelta(milliseconds=1)),
    )
    assert requested_key(early) < requested_key(late)  # type: ignore[operator]
    assert parse_time_key(time_key(42, "m")) == (42, "m")
    assert updated_key(None) is None
    assert bucket_prefix(TOTAL) == b"T" + bytes(8)


@settings(max_examples=300, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=40 * DAY_MS),
    length=st.integers(min_value=0, max_value=40 * DAY_MS),
)
def test_cover_is_exact_aligned_and_leaves_at_most_two_partial_minutes(
    start: int, length: int
) -> None:
    end = start + length
    split = cover(start, end)
    pieces = sorted(
        [(b0, b1) for _, b0, b1 in split.buckets] + list(split.edges), key=lambda p: p[0]
    )
    # The pieces tile [start, end) with no gap and no overlap.
    position = start
    for lo, hi in pieces:
        assert lo == position and hi > lo
        position = hi
    assert position == max(start, end) or (length == 0 and not pieces)
    for granularity, b0, b1 in split.buckets:
        size = dict(GRANULARITIES)[granularity]
        assert b0 % size == 0 and b1 % size == 0
    assert len(split.edges) <= 2
    assert all(hi - lo < 2 * MINUTE_MS for lo, hi in split.edges)
    # Days are used wherever a whole day fits: at most 2 x 23 hours + 2 x 59 minutes besides.
    hours = sum((b1 - b0) // 3_600_000 for g, b0, b1 in split.buckets if g == b"H")
    minutes = sum((b1 - b0) // MINUTE_MS for g, b0, b1 in split.buckets if g == b"M")
    assert hours <= 46 and minutes <= 118


def test_dims_round_trip_whatever_the_provider_id() -> None:
    from deliverytrack.tables.aggregates import decode_dims, encode_dims

    for provider_id in ("solapi", "a\x1fb", "", "한국"):
        dims = (provider_id, "SMS", "SENT")
        assert decode_dims(encode_dims(dims)) == dims


def _naive_delta(old: TrackingRecord | None, new: TrackingRecord | None) -> dict[bytes, Counter]:
    """Every row of ``old`` subtracted, every row of ``new`` added, zeros dropped."""
    delta: dict[bytes, Counter] = {}
    for record, sign in ((old, -1), (new, 1)):
        if record is not None:
            item = contribution(record)
            for key in _rows(item):
                delta.setdefault(key, Counter()).add(item.counter, sign)
    return {key: row for key, row in delta.items() if not row.is_zero()}


@settings(max_examples=200)
@given(st.lists(message_events(), max_size=30))
def test_the_delta_skips_only_changes_that_move_no_counter(events: list[MessageEvent]) -> None:
    """``aggregate_delta`` passes over record changes that keep every counted field; whatever
    the fold does, that must equal subtracting the old rows and adding the new ones."""
    table: dict[str, TrackingRecord | None] = {}
    for event in events:
        old = table.get(event.message_id)
        new, _ = fold(old, event)
        table[event.message_id] = new
        assert aggregate_delta({event.message_id: (old, new)}) == _naive_delta(old, new)


@settings(max_examples=200)
@given(st.lists(message_events(), max_size=30), st.lists(message_events(), max_size=30))
def test_the_delta_of_a_batch_is_the_sum_of_its_changes(
    first: list[MessageEvent], second: list[MessageEvent]
) -> None:
    """Many records changed in one batch (rows shared between them): the sum of each one's."""
    table: dict[str, TrackingRecord | None] = {}
    for event in first:
        table[event.message_id], _ = fold(table.get(event.message_id), event)
    before = dict(table)
    for event in second:
        table[event.message_id], _ = fold(table.get(event.message_id), event)
    changes = {mid: (before.get(mid), new) for mid, new in table.items()}
    expected: dict[bytes, Counter] = {}
    for old, new in changes.values():
        for key, row in _naive_delta(old, new).items():
            expected.setdefault(key, Counter()).add(row)
    assert aggregate_delta(changes) == {k: r for k, r in expected.items() if not r.is_zero()}
