"""Bounded queries: one query reads and holds at most its budget on a worker, yields the event
loop every few milliseconds (the fold keeps running), waits for a scan slot, and pages on with
a keyset cursor (``after``) instead of a deep offset."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from deliverytrack.models.codec import encode_record
from deliverytrack.models.enums import MessageType
from deliverytrack.streams.query import limits as query_limits
from deliverytrack.streams.query.limits import QueryLimitExceeded, ScanBudget, ScanBusy
from deliverytrack.streams.query.service import LocalQueries
from deliverytrack.streams.state.store import PartitionStore, Position
from deliverytrack.tables.due_index import epoch_ms
from deliverytrack.tables.fold import fold
from deliverytrack.tables.query import (
    MAX_WINDOW,
    ListOptions,
    QueryError,
    RecordFilter,
    after_cursor,
    next_after,
    page,
    parse_list_options,
)
from tests.factories import T0, send_recorded_factory

RECORDS = 3_000
SCAN = RecordFilter(to=("01012345678",))
"""A filter no aggregate or index answers: every record is read."""


def write_records(store: PartitionStore, n: int, *, same_ms_every: int = 1) -> None:
    """``n`` records; ``same_ms_every`` consecutive ones share one requestedAt (ties)."""
    batch = {}
    for i in range(n):
        mid = f"m-{i:05d}"
        at = T0 + timedelta(milliseconds=i // same_ms_every)
        record, _ = fold(None, send_recorded_factory(mid, requested_at=at, type=MessageType.SMS))
        assert record is not None
        batch[mid] = (None, record, encode_record(record))
    store.write(batch, Position())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PartitionStore]:
    store = PartitionStore(tmp_path_factory.mktemp("limits") / "p0.db")
    write_records(store, RECORDS, same_ms_every=7)
    yield store
    store.close()


def local(store: PartitionStore, budget: ScanBudget | None = None) -> LocalQueries:
    return LocalQueries({0: store}, {0}, budget or ScanBudget())


# --- the budget ---------------------------------------------------------------------------------


def test_a_scan_within_its_budget_answers(store: PartitionStore) -> None:
    rows = asyncio.run(local(store, ScanBudget(max_records=RECORDS)).rows(0, SCAN))
    assert sum(counter.count for counter in rows.values()) == RECORDS


def test_a_scan_past_its_budget_is_refused_with_how_to_narrow_it(store: PartitionStore) -> None:
    with pytest.raises(QueryLimitExceeded, match="more than 1,000 records.*requestedAtFrom"):
        asyncio.run(local(store, ScanBudget(max_records=1_000)).rows(0, SCAN))
    options = ListOptions(limit=10)
    queries = local(store, ScanBudget(max_records=1_000))
    with pytest.raises(QueryLimitExceeded):
        asyncio.run(queries.list_records(0, RecordFilter(to=("nobody",)), options))


def test_aggregates_and_index_walks_cost_only_what_they_read(store: PartitionStore) -> None:
    budget = ScanBudget(max_records=1_000)
    rows = asyncio.run(local(store, budget).rows(0, RecordFilter(type=(MessageType.SMS,))))
    assert sum(counter.count for counter in rows.values()) == RECORDS
    assert budget.read == 0  # counters, no record read
    budget = ScanBudget(max_records=1_000)
    found = asyncio.run(local(store, budget).list_records(0, RecordFilter(), ListOptions(limit=50)))
    assert len(found) == 50 and budget.read == 50


def test_the_partial_minutes_of_a_counted_range_are_not_a_scan(store: PartitionStore) -> None:
    """All 3,000 records sit in one minute: a range inside it is answered by walking that
    minute's records (bounded by construction), never refused by the budget."""
    flt = RecordFilter(
        requested_at_from=T0 + timedelta(milliseconds=1),
        requested_at_to=T0 + timedelta(milliseconds=400),
    )
    budget = ScanBudget(max_records=1_000)
    rows = asyncio.run(local(store, budget).rows(0, flt))
    assert sum(counter.count for counter in rows.values()) == 400 * 7  # ms 1..400, 7 each
    assert budget.read == 0


def test_a_list_holding_too_many_bytes_is_refused(store: PartitionStore) -> None:
    budget = ScanBudget(max_bytes=100_000)
    with pytest.raises(QueryLimitExceeded, match="bytes of records.*nextAfter"):
        asyncio.run(local(store, budget).list_records(0, RecordFilter(), ListOptions(limit=2_000)))


def test_a_long_scan_yields_the_event_loop_every_few_milliseconds(store: PartitionStore) -> None:
    """The fold shares the loop: a ticker task must keep getting turns during a full scan.

    Gaps are measured in this thread's CPU time: the scan's work between two turns of the
    ticker, not the time the process waited for a core (under a parallel test run that was
    0.2 s now and then, whatever the scan did)."""

    async def scenario() -> tuple[float, int, float]:
        ticks: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                ticks.append(time.thread_time())
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        started = time.thread_time()
        for _ in range(3):
            await local(store).rows(0, SCAN)
        elapsed = time.thread_time() - started
        done.set()
        await task
        gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
        return max(gaps), len(ticks), elapsed

    longest_gap, ticks, elapsed = asyncio.run(scenario())
    assert elapsed > 0.05  # a real scan (3 x 3,000 records decoded)
    assert ticks > 5
    # A slice is 5 ms; allow for a slow, shared CI machine, but far below the whole scan.
    assert longest_gap < max(0.05, elapsed / 4), (longest_gap, elapsed)


def test_long_queries_take_turns_on_the_scan_slots(store: PartitionStore) -> None:
    async def scenario() -> tuple[int, list[int]]:
        slots = asyncio.Semaphore(1)
        budgets = [ScanBudget(slots=slots) for _ in range(3)]
        peak = 0

        async def one(budget: ScanBudget) -> None:
            nonlocal peak
            queries = local(store, budget)
            try:
                async for _ in queries._candidates(0, queries.store(0), SCAN):
                    peak = max(peak, sum(b._has_slot for b in budgets))
            finally:
                budget.release()

        await asyncio.gather(*(one(budget) for budget in budgets))
        return peak, [budget.read for budget in budgets]

    peak, reads = asyncio.run(scenario())
    assert peak == 1  # one long query at a time (past its first SLOT_AFTER records)
    assert reads == [RECORDS] * 3  # and each finished


def test_a_query_that_never_gets_a_slot_is_busy(
    store: PartitionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(query_limits, "SLOT_WAIT_S", 0.05)

    async def scenario() -> None:
        slots = asyncio.Semaphore(0)  # every slot taken
        await local(store, ScanBudget(slots=slots)).rows(0, SCAN)

    with pytest.raises(ScanBusy, match="busy"):
        asyncio.run(scenario())


def test_cheap_queries_never_wait_for_a_slot(store: PartitionStore) -> None:
    async def scenario() -> int:
        budget = ScanBudget(slots=asyncio.Semaphore(0))
        found = await local(store, budget).list_records(0, RecordFilter(), ListOptions(limit=20))
        return len(found)

    assert asyncio.run(scenario()) == 20


# --- keyset paging ------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["asc", "desc"])
@pytest.mark.parametrize("order_by", ["requestedAt", "statusUpdatedAt"])
def test_paging_with_after_visits_every_record_once_in_order(
    store: PartitionStore, direction: str, order_by: str
) -> None:
    """Pages of 100 over 3,000 records where 7 share each millisecond (ties across pages)."""
    whole = asyncio.run(
        local(store).list_records(
            0,
            RecordFilter(),
            ListOptions(limit=RECORDS, order_by=order_by, order_direction=direction),  # type: ignore[arg-type]
        )
    )
    assert len(whole) == RECORDS
    seen: list[tuple[int, str]] = []
    after: tuple[int, str] | None = None
    reads = []
    while True:
        options = ListOptions(
            limit=100,
            order_by=order_by,  # type: ignore[arg-type]
            order_direction=direction,  # type: ignore[arg-type]
            after=after,
        )
        budget = ScanBudget()
        found = page(
            asyncio.run(local(store, budget).list_records(0, RecordFilter(), options)), options
        )
        reads.append(budget.read)
        seen.extend((ms, mid) for ms, mid, _ in found)
        if len(found) < 100:
            break
        after = found[-1][0], found[-1][1]
    assert seen == [(ms, mid) for ms, mid, _ in whole]
    assert max(reads) <= 100  # each page reads its own records, however deep


def test_next_after_continues_after_the_last_record_of_a_full_page() -> None:
    record = {"messageId": "m:1", "requestedAt": "2026-11-23T09:00:00.123Z"}
    ms = epoch_ms(datetime(2026, 11, 23, 9, 0, 0, 123_000, tzinfo=UTC))
    assert next_after([record], ListOptions(limit=1)) == after_cursor(ms, "m:1") == f"{ms}:m:1"
    assert next_after([record], ListOptions(limit=2)) is None  # not full: nothing follows
    assert parse_list_options({"after": [f"{ms}:m:1"]}).after == (ms, "m:1")


def test_after_and_the_window_are_checked_when_parsed() -> None:
    for bad in ("x", "12", ":m", "-1:m", "12:"):
        with pytest.raises(QueryError, match="after"):
            parse_list_options({"after": [bad]})
    with pytest.raises(QueryError, match=f"at most {MAX_WINDOW:,}.*nextAfter"):
        parse_list_options({"offset": ["9950"], "limit": ["100"]})
    assert parse_list_options({"offset": ["9900"], "limit": ["100"]}).offset == 9_900
    with pytest.raises(ValueError, match="offset \\+ limit"):
        ListOptions(offset=5_000, limit=5_001)
