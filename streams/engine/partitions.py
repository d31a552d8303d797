"""The partitions this worker owns: one RocksDB store and one position per partition, and
which of them answer queries. A partition is folded once it is in ``stores`` and answered
for once it is in ``ready``; both only after its store has caught up with the changelog."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from pathlib import Path

from deliverytrack.streams.state.memory import RocksMemory
from deliverytrack.streams.state.store import (
    PartitionStore,
    Position,
    StaleStore,
    destroy_store,
)

Restore = Callable[[int, PartitionStore], Awaitable[Position]]

log = logging.getLogger(__name__)


async def _restore_or_close(restore: Restore, partition: int, store: PartitionStore) -> Position:
    try:
        return await restore(partition, store)
    except BaseException:
        store.close()
        raise


class OwnedPartitions:
    """The stores and positions of the partitions assigned to this worker."""

    def __init__(
        self, state_dir: Path, cache_total: int, memory: RocksMemory | None = None
    ) -> None:
        """``memory``: the RocksDB budget the stores share (streams/state/memory.py)."""
        self.state_dir = state_dir
        self.cache_total = cache_total
        self.memory = memory
        self._stores: dict[int, PartitionStore] = {}
        self._positions: dict[int, Position] = {}
        self.ready: set[int] = set()
        """Partitions whose store has caught up with the changelog: safe to answer queries."""

    @property
    def stores(self) -> Mapping[int, PartitionStore]:
        """The live map (a query holding it sees a partition leave)."""
        return self._stores

    @property
    def positions(self) -> Mapping[int, Position]:
        return self._positions

    def attach(
        self,
        partition: int,
        store: PartitionStore,
        position: Position | None = None,
        *,
        ready: bool = False,
    ) -> None:
        """Own ``partition`` with ``store`` (already caught up) from ``position``."""
        self._stores[partition] = store
        self._positions[partition] = position or Position()
        if ready:
            self.ready.add(partition)

    def close_all(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()
        self.ready.clear()

    async def assign(self, partitions: Collection[int], restore: Restore) -> None:
        """Own exactly ``partitions``: delete the others' stores, split the record cache over
        the new set, open and ``restore`` each new one. A partition whose restore fails does
        not join (its store is closed) and the error propagates.

        A store whose partition moved to another worker is deleted, not kept for its return:
        the new owner's deletions (purges, retention) reach it only as changelog tombstones,
        which compaction drops after ``delete.retention.ms``, so the copy would keep deleted
        records' personal data and, restored from its old position, serve them again."""
        partitions = set(partitions)
        self.ready &= partitions
        for partition in sorted(set(self._stores) - partitions):
            destroy_store(self._stores.pop(partition))
            self._positions.pop(partition, None)
        # The record cache is per worker: split over the partitions it owns now.
        total = self.cache_total
        share = max(1, total // len(partitions)) if total and partitions else 0
        for store in self._stores.values():
            if store.cache.size != share:
                store.cache.resize(share)
        for partition in sorted(partitions - set(self._stores)):
            store = self._open(partition, share)
            try:
                position = await restore(partition, store)
            except StaleStore as stale:  # it may have missed deletions: restore it afresh
                log.warning("%s; restoring it from the changelog", stale)
                destroy_store(store)
                store = self._open(partition, share)
                position = await _restore_or_close(restore, partition, store)
            except BaseException:
                store.close()
                raise
            self.attach(partition, store, position)

    def _open(self, partition: int, cache_size: int) -> PartitionStore:
        path = self.state_dir / f"partition-{partition}.db"
        return PartitionStore(path, cache_size=cache_size, memory=self.memory)
