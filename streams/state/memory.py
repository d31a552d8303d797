"""What bounds a worker's memory (bench/worker_memory.py measures it; the numbers are in
bench/README.md and the README's "Memory"). Three things held it, none of them the table
itself (that lives in RocksDB files):

- **The C heap kept what the batches had freed.** A fold batch (up to 20,000 events) decodes,
  encodes and sends tens of MB of short-lived buffers; glibc's malloc keeps freed memory in its
  heap and raises its mmap threshold as large blocks are freed, so every batch's high-water mark
  stayed resident. The worker
  fixes the mmap threshold (large buffers are mapped and unmapped, never parked in the heap),
  caps the malloc arenas of its threads, and returns the heap's free pages to the system after
  a batch (``malloc_trim``, at most once per ``TRIM_INTERVAL_S``: a few ms each).
- **RocksDB's memtables and block cache**, per partition and unbounded in sum (64 MB write
  buffers, two of them, per partition store). The stores of one worker share one block cache and
  one write buffer manager charged to it: ``DELIVERYTRACK_ROCKSDB_MEMORY_MB`` bounds memtables,
  data blocks, index and filter blocks together.
- **The record cache** (``DELIVERYTRACK_RECORD_CACHE_SIZE``): decoded records, the most
  recently written first; bounded by its size.

glibc only (Linux); elsewhere the heap calls do nothing and the RocksDB bounds still hold.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import resource
import sys
import time
from typing import Any

from rocksdict import BlockBasedOptions, Cache, Options, WriteBufferManager

log = logging.getLogger(__name__)

TRIM_INTERVAL_S = 1.0
MMAP_THRESHOLD = 256 * 1024
"""Allocations from this size up are mapped and unmapped on their own (glibc M_MMAP_THRESHOLD;
setting it also stops glibc from raising it as large blocks are freed)."""
ARENA_MAX = 1
"""glibc malloc arenas (M_ARENA_MAX): Faust's consumer thread and RocksDB's threads would each
get one, up to 8 per core, each keeping its own freed memory."""

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only (musl has none)
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def tune_heap() -> bool:
    """Fix glibc's mmap threshold and arena count (once, at worker start)."""
    if _LIBC is None:
        return False
    ok = bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    ok = bool(_LIBC.mallopt(_M_ARENA_MAX, ARENA_MAX)) and ok
    return ok


class HeapTrimmer:
    """Returns the C heap's free pages to the system after work freed memory (:meth:`freed`),
    at most once per ``interval_s``; :meth:`maybe_trim` is cheap to call often."""

    def __init__(self, interval_s: float = TRIM_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._last = 0.0
        self._dirty = False
        self.trims = 0

    def freed(self) -> None:
        self._dirty = True

    def maybe_trim(self) -> None:
        if not self._dirty or _LIBC is None:
            return
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        self._last = now
        self._dirty = False
        _LIBC.malloc_trim(0)
        self.trims += 1


class RocksMemory:
    """One block cache and one write buffer manager (charged to it) shared by the partition
    stores of one worker: their memtables, data blocks, index and filter blocks stay within
    ``budget_mb`` together, whatever the number of partitions or records."""

    def __init__(self, budget_mb: int) -> None:
        self.budget_bytes = budget_mb * 2**20
        self.cache = Cache(self.budget_bytes)
        # Memtables may take up to half of it; a flush starts before they take more.
        self.write_buffers = WriteBufferManager.new_write_buffer_manager_with_cache(
            self.budget_bytes // 2, False, self.cache
        )
        # 16 MiB memtables (RocksDB's default is 64): smaller ones, measured with a 64 MB
        # budget (8 MiB), flushed and compacted so often that folding slowed 3x by 1,000,000
        # records.
        self.write_buffer_size = max(1 * 2**20, min(16 * 2**20, self.budget_bytes // 8))

    def configure(self, options: Options) -> None:
        options.set_write_buffer_manager(self.write_buffers)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_max_write_buffer_number(2)
        table = BlockBasedOptions()
        table.set_block_cache(self.cache)
        # A bloom filter per file: the first read of every new messageId (each send result)
        # is a miss, answered by the filters instead of a search of every level.
        table.set_bloom_filter(10, False)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        options.set_block_based_table_factory(table)

    def usage(self) -> dict[str, int]:
        return {
            "budgetBytes": self.budget_bytes,
            "blockCacheBytes": int(self.cache.get_usage()),
            "memtableBytes": int(self.write_buffers.get_usage()),
        }


def rss_bytes() -> int:
    """Resident set size of this process now (Linux: /proc/self/statm), else the peak."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) * (1 if sys.platform == "darwin" else 1024)
