"""What one query may cost a worker (README "Security", "Query limits").

A filter the aggregates and indexes cannot answer reads records one by one, on the event loop
that also runs the fold. :class:`ScanBudget` bounds one query's share, per worker:

- records read: at most ``DELIVERYTRACK_QUERY_SCAN_BUDGET``; past it the query is refused
  (:class:`QueryLimitExceeded`, HTTP 422) instead of running on;
- record bytes held for a list (``offset + limit`` per partition until the page is cut): at
  most ``DELIVERYTRACK_QUERY_MAX_ANSWER_BYTES``;
- time on the loop: it yields after each slice of ``SLICE_S`` (a few ms), so the fold, the
  webhook ingress and other queries run between slices;
- concurrency: past its first ``SLOT_AFTER`` records a query takes one of
  ``DELIVERYTRACK_QUERY_CONCURRENT_SCANS`` slots (cheap queries never wait), so however many
  scans are asked for, the fold keeps most of the CPU. A query that cannot get a slot within
  ``SLOT_WAIT_S`` is answered 503 (:class:`ScanBusy`): retry later.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

SLICE_S = 0.005
"""Longest stretch a query runs on the event loop before it yields."""
SLOT_AFTER = 1_000
"""Records a query may read before it needs a scan slot."""
SLOT_WAIT_S = 10.0
"""How long a query waits for a scan slot (the gather deadline of a remote part)."""


class QueryLimitExceeded(Exception):  # noqa: N818 - an HTTP answer (422), not a server error
    """The query would read or hold more than one query may; the message says how to
    narrow it."""


class ScanBusy(Exception):  # noqa: N818 - an HTTP answer (503)
    """Every scan slot stayed taken for :data:`SLOT_WAIT_S`."""


@dataclass(slots=True)
class ScanBudget:
    """One query's budget on one worker (its partitions share it)."""

    max_records: int | None = None
    max_bytes: int | None = None
    slots: asyncio.Semaphore | None = None
    read: int = 0
    held: int = 0
    _slice_end: float = field(default_factory=lambda: time.monotonic() + SLICE_S)
    _has_slot: bool = False

    def take(self, records: int = 1) -> bool:
        """Count ``records`` read; True when the query should :meth:`pause` now."""
        self.read += records
        if self.max_records is not None and self.read > self.max_records:
            raise QueryLimitExceeded(
                f"this query reads more than {self.max_records:,} records on one worker "
                "(a filter the counters and indexes cannot answer is read record by record): "
                "narrow it with requestedAtFrom/requestedAtTo, providerId, type, status or "
                "messageId (or raise DELIVERYTRACK_QUERY_SCAN_BUDGET)"
            )
        if self.slots is not None and not self._has_slot and self.read >= SLOT_AFTER:
            return True
        return time.monotonic() >= self._slice_end

    def slice_over(self) -> bool:
        """True when the query has had its slice of the event loop (reads not counted)."""
        return time.monotonic() >= self._slice_end

    def hold(self, size: int) -> None:
        """Count ``size`` bytes of records kept for the answer."""
        self.held += size
        if self.max_bytes is not None and self.held > self.max_bytes:
            raise QueryLimitExceeded(
                f"this list holds more than {self.max_bytes:,} bytes of records on one worker "
                "(offset + limit records per partition): ask for a smaller page (limit), page "
                "on with the answer's nextAfter instead of offset, or narrow the filter (or "
                "raise DELIVERYTRACK_QUERY_MAX_ANSWER_BYTES)"
            )

    async def pause(self) -> None:
        """Yield to the event loop (first taking a scan slot, once the query needs one)."""
        if self.slots is not None and not self._has_slot and self.read >= SLOT_AFTER:
            try:
                async with asyncio.timeout(SLOT_WAIT_S):
                    await self.slots.acquire()
            except TimeoutError:
                raise ScanBusy("the worker is busy with other long queries; retry later") from None
            self._has_slot = True
        await asyncio.sleep(0)
        self._slice_end = time.monotonic() + SLICE_S

    def release(self) -> None:
        """Give back the scan slot (always call once the query is done)."""
        if self._has_slot and self.slots is not None:
            self._has_slot = False
            self.slots.release()
