"""Partition stores keep counters and indexes that give the same answers as a brute-force scan,
through updates, deletes and a rebuild; LocalQueries picks aggregates, index walks or scans."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from deliverytrack.models.codec import encode_record
from deliverytrack.models.enums import MessageType, TrackingStatus
from deliverytrack.models.records import TrackingRecord
from deliverytrack.streams.query.service import LocalQueries, Rows
from deliverytrack.streams.state.store import (
    _META_DERIVED,
    AGGREGATE,
    PartitionStore,
    Position,
)
from deliverytrack.tables.aggregates import Counter, contribution
from deliverytrack.tables.fold import fold
from deliverytrack.tables.query import ListOptions, RecordFilter, matches
from tests.factories import T0, send_recorded_factory, update_status_factory

S = TrackingStatus
PROVIDERS = ("solapi", "iwinv", "sim")
TYPES = (MessageType.SMS, MessageType.ALIMTALK)


def brute(records: dict[str, TrackingRecord], flt: RecordFilter) -> Rows:
    out: Rows = {}
    for record in records.values():
        if matches(record, flt):
            item = contribution(record)
            out.setdefault(item.dims, Counter()).add(item.counter)
    return out


def random_history(seed: int, n: int = 300) -> list[dict[str, tuple[Any, Any]]]:
    """Batches of (old, new) changes: creates, transitions and deletes over ~2 days."""
    rng = random.Random(seed)
    live: dict[str, TrackingRecord] = {}
    batches: list[dict[str, tuple[Any, Any]]] = []
    for b in range(12):
        batch: dict[str, tuple[Any, Any]] = {}
        for _ in range(n // 6):
            choice = rng.random()
            if choice < 0.5 or not live:
                mid = f"m-{rng.randrange(n)}"
                if mid in live or mid in batch:
                    continue
                new, _ = fold(
                    None,
                    send_recorded_factory(
                        mid,
                        provider_id=rng.choice(PROVIDERS),
                        type=rng.choice(TYPES),
                        requested_at=T0 + timedelta(milliseconds=rng.randrange(2 * 86_400_000)),
                    ),
                )
            else:
                mid = rng.choice(sorted(live))
                if mid in batch:
                    continue
                old = live[mid]
                if choice < 0.9:
                    status = rng.choice([S.DELIVERED, S.FAILED, S.CLICKED])
                    sent = old.requested_at + timedelta(seconds=1)
                    new, _ = fold(
                        old,
                        update_status_factory(
                            status,
                            mid,
                            at=sent + timedelta(seconds=b + 1),
                            sent_at=sent,
                            delivered_at=sent + timedelta(seconds=rng.randrange(1, 90)),
                        ),
                    )
                else:
                    new = None
            old = live.get(mid)
            batch[mid] = (old, new)
            if new is None:
                live.pop(mid, None)
            else:
                live[mid] = new
        batches.append(batch)
    return batches


def write_all(store: PartitionStore, batches: list[dict[str, tuple[Any, Any]]]) -> dict[str, Any]:
    live: dict[str, TrackingRecord] = {}
    for batch in batches:
        changes = {
            mid: (old, new, None if new is None else encode_record(new))
            for mid, (old, new) in batch.items()
        }
        store.write(changes, Position())
        for mid, (_, new) in batch.items():
            if new is None:
                live.pop(mid, None)
            else:
                live[mid] = new
    return live


FILTERS = [
    RecordFilter(),
    RecordFilter(provider_id=("solapi", "iwinv"), status=(S.DELIVERED, S.CLICKED)),
    RecordFilter(
        type=(MessageType.SMS,),
        requested_at_from=T0 + timedelta(hours=3, seconds=17, milliseconds=5),
        requested_at_to=T0 + timedelta(days=1, hours=7, minutes=59, seconds=1),
    ),
    RecordFilter(requested_at_to=T0 + timedelta(minutes=90, milliseconds=1)),
    RecordFilter(to=("01012345678",), status=(S.FAILED,)),
    RecordFilter(status_updated_at_from=T0 + timedelta(hours=12)),
    RecordFilter(message_id=("m-1", "m-2", "m-3", "nope")),
    RecordFilter(status=()),
]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_counts_match_a_brute_force_scan(tmp_path: Path, seed: int) -> None:
    store = PartitionStore(tmp_path / "p0.db")
    live = write_all(store, random_history(seed))
    local = LocalQueries({0: store}, {0})
    for flt in FILTERS:
        got = asyncio.run(local.rows(0, flt))
        expected = brute(live, flt)
        assert {d: c for d, c in got.items() if not c.is_zero()} == expected, flt


@pytest.mark.parametrize("order_by", ["requestedAt", "statusUpdatedAt"])
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_lists_walk_the_index_in_order(tmp_path: Path, order_by: str, direction: str) -> None:
    store = PartitionStore(tmp_path / "p0.db")
    live = write_all(store, random_history(7))
    local = LocalQueries({0: store}, {0})
    flt = RecordFilter(provider_id=("iwinv",), requested_at_from=T0 + timedelta(hours=2))
    options = ListOptions(limit=9, offset=4, order_by=order_by, order_direction=direction)  # type: ignore[arg-type]
    found = asyncio.run(local.list_records(0, flt, options))
    attr = "requested_at" if order_by == "requestedAt" else "status_updated_at"
    expected = sorted(
        (r for r in live.values() if matches(r, flt)),
        key=lambda r: (getattr(r, attr), r.message_id),
        reverse=direction == "desc",
    )[:13]
    assert [mid for _, mid, _ in found] == [r.message_id for r in expected]


def test_a_store_without_derived_data_rebuilds_it(tmp_path: Path) -> None:
    path = tmp_path / "p0.db"
    store = PartitionStore(path)
    live = write_all(store, random_history(11))
    expected = asyncio.run(LocalQueries({0: store}, {0}).rows(0, RecordFilter()))
    # Simulate a store written by a version without aggregates: drop them and the marker.
    db = store._db
    for key in list(db.keys(from_key=AGGREGATE)):
        if not key.startswith(AGGREGATE):
            break
        db.delete(key)
    db.delete(_META_DERIVED)
    store.close()
    reopened = PartitionStore(path)
    got = asyncio.run(LocalQueries({0: reopened}, {0}).rows(0, RecordFilter()))
    assert got == expected == brute(live, RecordFilter())


def test_due_listing_is_oldest_first(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0.db")
    live = write_all(store, random_history(5))
    local = LocalQueries({0: store}, {0})
    now = T0 + timedelta(days=3)
    due = asyncio.run(local.due(0, now, 10))
    pollable = sorted(
        (r for r in live.values() if r.next_check_at is not None and r.status is S.SENT),
        key=lambda r: (r.next_check_at, r.message_id),
    )
    assert [mid for _, mid, _ in due] == [r.message_id for r in pollable[:10]]


def test_the_due_listing_holds_no_more_than_a_list_may(tmp_path: Path) -> None:
    """``/records/due?limit=10000`` reads up to 10,000 records per partition: like any list,
    within DELIVERYTRACK_QUERY_MAX_ANSWER_BYTES (422 past it), yielding the event loop."""
    from deliverytrack.streams.query.limits import QueryLimitExceeded, ScanBudget

    store = PartitionStore(tmp_path / "p0.db")
    write_all(store, random_history(5))
    now = T0 + timedelta(days=3)
    everything = asyncio.run(LocalQueries({0: store}, {0}).due(0, now, 10_000))
    size = sum(len(raw) for _, _, raw in everything)
    assert len(everything) > 2
    pauses = 0

    class Counted(ScanBudget):
        async def pause(self) -> None:
            nonlocal pauses
            pauses += 1
            await super().pause()

    async def due(budget: ScanBudget) -> list[Any]:
        return await LocalQueries({0: store}, {0}, budget).due(0, now, 10_000)

    assert asyncio.run(due(Counted(max_bytes=size))) == everything
    with pytest.raises(QueryLimitExceeded, match="holds more than"):
        asyncio.run(due(Counted(max_bytes=size - 1)))
    import deliverytrack.streams.query.limits as limits

    pauses = 0
    slice_s, limits.SLICE_S = limits.SLICE_S, -1.0  # every slice is over at once
    try:
        asyncio.run(due(Counted()))
    finally:
        limits.SLICE_S = slice_s
    assert pauses > 0


def test_a_partition_that_is_not_ready_is_not_answered(tmp_path: Path) -> None:
    from deliverytrack.streams.query.service import PartitionGone

    store = PartitionStore(tmp_path / "p0.db")
    with pytest.raises(PartitionGone):
        asyncio.run(LocalQueries({0: store}, set()).rows(0, RecordFilter()))
    store.close()
    with pytest.raises(PartitionGone):
        asyncio.run(LocalQueries({0: store}, {0}).rows(0, RecordFilter()))


@pytest.mark.parametrize(
    "offset",
    [
        timedelta(microseconds=429),  # in the first millisecond of a minute: aggregates
        timedelta(seconds=17, microseconds=999),  # inside a minute: an edge read record by record
    ],
)
def test_a_bound_equal_to_a_records_own_time_matches_it(tmp_path: Path, offset: timedelta) -> None:
    """Counts, count-by rows, stats rows and lists all include a record whose requestedAt (or
    statusUpdatedAt) equals the bound, sub-millisecond digits included (k-msg's inclusive
    bounds; the lower bound used to round up past it)."""
    at = T0 + offset
    record, _ = fold(None, send_recorded_factory("m-at", requested_at=at, recorded_at=at))
    before, _ = fold(None, send_recorded_factory("m-before", requested_at=T0 - timedelta(hours=1)))
    assert record is not None and before is not None
    store = PartitionStore(tmp_path / "p0.db")
    write_all(store, [{"m-at": (None, record), "m-before": (None, before)}])
    local = LocalQueries({0: store}, {0})
    for flt in (
        RecordFilter(requested_at_from=at),
        RecordFilter(requested_at_from=at, requested_at_to=at),
        RecordFilter(requested_at_from=at, requested_at_to=at + timedelta(days=2)),
        RecordFilter(status_updated_at_from=at, status_updated_at_to=at),
    ):
        rows = asyncio.run(local.rows(0, flt))
        assert sum(c.count for c in rows.values()) == 1, flt
        for order_by in ("requestedAt", "statusUpdatedAt"):
            options = ListOptions(limit=10, order_by=order_by)  # type: ignore[arg-type]
            found = asyncio.run(local.list_records(0, flt, options))
            assert [mid for _, mid, _ in found] == ["m-at"], (flt, order_by)
