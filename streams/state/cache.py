"""The record cache: the records the fold reads most, kept so it does not read them back from
RocksDB and check them again.

Records are kept as their JSON bytes in one ring buffer allocated up front (``ENTRY_BYTES`` per
record of the configured size), written in order and overwritten oldest first. Separate bytes
objects did not work: each ~1.2 KB record, allocated among a batch's short-lived objects, kept
~8 KB of the C heap from being returned (measured), so the cache cost as much memory as the
models it replaced. The ring costs exactly its size, however the heap is fragmented.

Only records the hot path holds (``HotRecord``: their bytes are what ``encode_record`` writes,
checked when read from RocksDB or made by the hot fold) are kept; a hit loads their bytes
without that check again. Written through by ``PartitionStore.write``, the only way records
change, after RocksDB took the batch, so a cached record is always the stored one.
"""

from __future__ import annotations

from collections import deque

from orjson import loads

from deliverytrack.tables.hot.codec import HotRecord

ENTRY_BYTES = 2_048
"""Ring bytes per record of the cache's size (records are ~1.2 KB; larger ones take more)."""


class RecordCache:
    def __init__(self, size: int) -> None:
        self.hits = 0
        self.misses = 0
        self.resize(size)

    def resize(self, size: int) -> None:
        """``size`` records' worth of ring (what was cached is dropped)."""
        self.size = size
        self._ring = bytearray(size * ENTRY_BYTES)
        self._view = memoryview(self._ring)
        self._head = 0
        self._where: dict[str, tuple[int, int]] = {}
        self._order: deque[tuple[str, int, int]] = deque()

    def __len__(self) -> int:
        return len(self._where)

    def get(self, message_id: str) -> HotRecord | None:
        raw = self.raw(message_id)
        return None if raw is None else HotRecord(loads(raw), raw)

    def raw(self, message_id: str) -> bytes | None:
        """The cached record's JSON (a hit), or None."""
        where = self._where.get(message_id)
        if where is None:
            return None
        self.hits += 1
        start, end = where
        return bytes(self._view[start:end])

    def put(self, message_id: str, record: object) -> None:
        """Keep ``record`` (a ``HotRecord``; anything else, None included, is forgotten)."""
        self._where.pop(message_id, None)
        if type(record) is not HotRecord:
            return
        raw = record.json
        size = len(raw)
        capacity = len(self._ring)
        if size > capacity // 8:
            return  # no room worth its eviction of others
        start = self._head
        if start + size > capacity:
            self._evict_from(start, capacity)  # what is left of the last lap
            start = 0
        self._evict_from(start, start + size)
        end = start + size
        self._view[start:end] = raw
        self._where[message_id] = (start, end)
        self._order.append((message_id, start, end))
        self._head = end

    def _evict_from(self, start: int, end: int) -> None:
        """Forget the oldest entries, which lie from ``start`` on, up to ``end``."""
        order, where = self._order, self._where
        while order and order[0][1] < end and order[0][1] >= start:
            message_id, first, last = order.popleft()
            if where.get(message_id) == (first, last):
                del where[message_id]

    def clear(self) -> None:
        self.resize(self.size)
