"""Kafka's default partitioning of a keyed record (the Java client's ``murmur2`` of the key,
positive, modulo the partition count), the same partition aiokafka's ``DefaultPartitioner`` and
every other client give a key. This one reads the key's 32-bit words with one ``struct`` call
instead of byte by byte: ~2.7x faster than aiokafka's pure-Python loop on a 35-byte provider-id
key (3.5 against 9.4 µs), and the engine partitions every provider-id link it publishes by it.
``tests/unit/streams/test_partitioner.py`` checks it against aiokafka's on any bytes."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_CACHED_WORDS = 64
_words_of: dict[int, Callable[[bytes], tuple[int, ...]]] = {}


def murmur2(data: bytes) -> int:
    """MurmurHash2 of ``data`` as Kafka's Java client computes it (``Utils.murmur2``)."""
    length = len(data)
    h = _SEED ^ length
    count = length >> 2
    if count:
        words = _words_of.get(count)
        if words is None:
            words = struct.Struct(f"<{count}I").unpack_from
            if count <= _CACHED_WORDS:  # bounded: keys of any length may arrive
                _words_of[count] = words
        for k in words(data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    tail = length & 3
    if tail:
        base = length - tail
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h ^= data[base]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def partition_for(key: bytes, partitions: Sequence[int]) -> int:
    """The partition of ``key`` among ``partitions`` (sorted by id, not empty)."""
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
